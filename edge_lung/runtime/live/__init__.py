"""The live path: audio in, decisions out, in real time.

Sources (`sources`: file replay, serial link; `capture`: a USB stethoscope through PortAudio, sounddevice
imported lazily) fill a preallocated ring buffer (`ring`); `stream` cuts cyclic-padded windows, gates them
on quality and decides; `worker` keeps inference off the capture thread; `runner` runs a session;
`classifier` is the one object an integrator needs (`edge_lung.Classifier`); `events` writes JSON lines and
the terminal view; `recorder` keeps the session as FLAC; `serial` is the wire protocol.

May import: runtime.artifact, core and data.
"""
