"""A private PulseAudio daemon with null sinks: a real, clocked audio device for the capture tests (issue #15).

`paplay` plays a recording into a null sink; PortAudio captures the sink's monitor through ALSA's
`pulse` device (alsa-plugins), exactly as `edge-lung stream --device pulse` does on a desktop.
The daemon lives in its own directory with its own socket (no D-Bus, no user session, no system
daemon touched), runs as root without `--system`, and is always stopped by `stop()`.
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

APT_PACKAGES = ("pulseaudio", "pulseaudio-utils", "libportaudio2", "libasound2-plugins")
INSTALL_COMMAND = f"sudo apt-get install -y {' '.join(APT_PACKAGES)}"
ALSA_PULSE_PLUGIN = "libasound_module_pcm_pulse.so"


def missing_packages() -> list[str]:
    """What the real-audio tests need and this machine lacks (by the Debian package that provides it)."""
    tools = {"pulseaudio": ("pulseaudio",), "pulseaudio-utils": ("paplay", "pacat", "pactl")}
    missing = [pkg for pkg, names in tools.items() if not all(shutil.which(n) for n in names)]
    if ctypes.util.find_library("portaudio") is None:
        missing.append("libportaudio2")
    plugin_dirs = [*Path("/usr/lib").glob("*/alsa-lib"), Path("/usr/lib/alsa-lib"), Path("/usr/lib64/alsa-lib")]
    if not any((d / ALSA_PULSE_PLUGIN).exists() for d in plugin_dirs):
        missing.append("libasound2-plugins")
    return missing


class PulseDaemon:
    """`pulseaudio` on a private socket under `root`; `stop()` ends it (and is safe to call twice)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.socket = self.root / "native"
        self.log = self.root / "pulseaudio.log"
        self.proc: subprocess.Popen | None = None
        self.clients: list[subprocess.Popen] = []

    def _daemon_env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "XDG_RUNTIME_DIR": str(self.root),
            "XDG_CONFIG_HOME": str(self.root / "config"),
            "PULSE_RUNTIME_PATH": str(self.root / "run"),
            "PULSE_STATE_PATH": str(self.root / "state"),
        }

    def start(self, timeout_s: float = 15.0) -> None:
        """Start the daemon (no default modules: only the socket) and wait until it answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [
            "pulseaudio",
            "-n",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--disallow-exit",
            "--use-pid-file=no",
            "--log-level=info",
            f"--log-target=file:{self.log}",
            "-L",
            f"module-native-protocol-unix auth-anonymous=1 socket={self.socket}",
        ]
        self.proc = subprocess.Popen(
            cmd,
            env=self._daemon_env(),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {self.proc.returncode}: {self._log_tail()}")
            if self.socket.exists() and self._pactl("info", check=False).returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"pulseaudio did not answer within {timeout_s:.0f} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else "(no log)"

    def client_env(self, sink: str | None = None) -> dict[str, str]:
        """Environment for clients (pactl, paplay, PortAudio's ALSA `pulse` device) of this daemon."""
        env = dict(os.environ, PULSE_SERVER=f"unix:{self.socket}")
        if sink is not None:
            env.update(PULSE_SINK=sink, PULSE_SOURCE=f"{sink}.monitor")
        return env

    def _pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["pactl", *args], env=self.client_env(), capture_output=True, text=True, timeout=10, check=check
        )

    def load_null_sink(self, name: str, rate: int) -> int:
        """A mono s16le null sink at `rate`, kept running; returns its module index (for `unload`).

        The monitor of an idle null sink delivers nothing until something plays (measured: the first
        callback came with the first played block), unlike a microphone, which delivers from the
        moment it is opened. Endless silence (`pacat /dev/zero`) keeps the sink running; mixed
        with a playback at unity volume it leaves the playback's samples exact."""
        out = self._pactl(
            "load-module", "module-null-sink", f"sink_name={name}", f"rate={rate}", "channels=1", "format=s16le"
        )
        self.clients.append(
            self._client(
                [
                    "pacat",
                    "--playback",
                    f"--device={name}",
                    "--raw",
                    "--format=s16le",
                    f"--rate={rate}",
                    "--channels=1",
                    "/dev/zero",
                ]
            )
        )
        return int(out.stdout.strip())

    def _client(self, cmd: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            cmd, env=self.client_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def unload(self, module: int) -> None:
        self._pactl("unload-module", str(module))

    def unload_sinks(self) -> None:
        """Remove every null sink. With another sink left, PulseAudio moves a capture from an unloaded
        sink's monitor to the remaining one, and the client never sees the unplug."""
        if self.proc is not None and self.proc.poll() is None:
            self._pactl("unload-module", "module-null-sink", check=False)

    def play(self, path: Path, sink: str) -> subprocess.Popen:
        """`paplay` the file into `sink` (a 2 s buffer so that a busy machine does not underrun it)."""
        player = self._client(["paplay", f"--device={sink}", "--latency-msec=2000", str(path)])
        self.clients.append(player)
        return player

    def kill(self) -> None:
        """Stop the daemon abruptly (SIGKILL): what a crashed sound server looks like to its clients."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop the clients this object started, then the daemon."""
        for client in self.clients:
            if client.poll() is None:
                client.kill()
            client.wait(timeout=10)
        self.clients.clear()
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
