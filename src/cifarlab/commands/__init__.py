"""The command layer (top of the import graph): one module per command (or pair of commands sharing arguments),
each with its argparse definition (``add_*_parser``) and handler (``cmd_*``). Modules import only the standard
library and light cifarlab modules at top level; handlers import the heavy ones (torch, numpy, matplotlib), so
``cifarlab --help`` starts in a fraction of a second."""
