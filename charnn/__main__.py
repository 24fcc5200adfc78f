from charnn.cli import app

app(prog_name="charnn")
