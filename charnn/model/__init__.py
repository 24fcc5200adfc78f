"""The model: the network and what reads it without training it.

    network.py    `ModelConfig`, `CharRNN` (embedding -> stacked cell -> head), the state, the hand-fused
                  inference step (`Stepper`) and `fold_for_inference`, what `--amp` really runs in (`amp_dtype`)
    cells/        the cells, one module each, registered by name (`CELLS`)
    voices.py     voices: names, blends, the voice table's rows, which windows learn "no voice", record files
    evaluation.py `evaluate`: the loss over a whole text, scored the same way everywhere

May import `text` and the shared modules (errors, capability, device, distributed).
"""
