from charnn.cli import run

run()
