#!/usr/bin/env python3
"""Play an audio file as the edge-lung serial PCM protocol on a pseudo-terminal (no hardware needed).

    python firmware_host/virtual_stethoscope.py recording.wav --corrupt 0.02 --drop 0.01
    # prints e.g. /dev/pts/7; in another terminal:
    edge-lung stream MODEL_DIR --serial /dev/pts/7

Paced in real time by default (like a real stethoscope); --fast writes as fast as the reader
drains the port. Ctrl-C stops. A thin wrapper around edge_lung.runtime.live.serial.VirtualStethoscope.
"""

from __future__ import annotations

import argparse
import sys
import time

from edge_lung.testing import Impairments, VirtualStethoscope


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", help="WAV/FLAC file to play (any sample rate; sent at its own rate)")
    p.add_argument("--frame-samples", type=int, default=256, help="samples per frame (1..4096, default 256)")
    p.add_argument("--drop", type=float, default=0.0, help="probability a frame is never sent")
    p.add_argument("--corrupt", type=float, default=0.0, help="probability a frame has one byte flipped")
    p.add_argument("--truncate", type=float, default=0.0, help="probability a frame is cut short")
    p.add_argument("--garbage", type=float, default=0.0, help="probability of random bytes before a frame")
    p.add_argument("--seed", type=int, default=0, help="random seed for the impairments")
    p.add_argument("--fast", action="store_true", help="do not pace in real time")
    p.add_argument("--loop", action="store_true", help="play the file again and again")
    args = p.parse_args(argv)
    try:
        impair = Impairments(args.drop, args.corrupt, args.truncate, args.garbage, args.seed)
        steth = VirtualStethoscope.from_file(
            args.file, frame_samples=args.frame_samples, impair=impair, realtime=not args.fast, loop=args.loop
        )
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with steth:
        print(steth.port, flush=True)
        try:
            while not steth.done.wait(0.2):
                pass
            time.sleep(0.5)  # let the reader drain the pty before it disappears
        except KeyboardInterrupt:
            pass
    log = steth.log
    print(f"sent {len(log.intact)} intact frames, damaged {len(log.damaged)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
