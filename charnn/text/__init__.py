"""Text: what a user's corpus becomes before any model sees it.

    corpus.py     files, folders (recursive, globs), compressed files and built-in names -> validated UTF-8 text;
                  the manifest and fingerprint
    corpora.py    the built-in corpora by name: `shakespeare` (in the package), `python-stdlib` (built offline)
    tokenizer.py  the character vocabulary as a `tokenizers.Tokenizer`; fast bulk encoding
    streams.py    the memory-mapped encoded-corpus cache; the truncated-BPTT stream layout (`Streams`)

The bottom of the house: may import only `charnn.errors`.
"""
