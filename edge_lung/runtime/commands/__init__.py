"""Glue between the `edge-lung` runtime commands and the rooms below: options to sessions (`session`),
results to terminal tables (`tables`).

May import: every other runtime room, core and data.
"""
