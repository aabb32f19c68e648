"""`edge-lung report` and `stream --report`: offline pages from the runtime's own windows, bad files listed
with their reason, and the page checked in a real headless browser (Chromium)."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_lung.runtime.commands.session import StreamOptions, load_classifier, report_session, stream_session
from edge_lung.runtime.live.stream import StreamConfig
from edge_lung.runtime.offline.classify import classify_file

CHROMIUM_INSTALL = "apt-get install -y chromium"
_IMG = re.compile(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx")
    from edge_lung.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def classifier(model_dir: Path):
    # a low threshold: the band-energy test model must flag some windows of the synthetic sounds
    return load_classifier(model_dir, StreamConfig(threshold=0.2), 1)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, synth_db: Path) -> Path:
    """A synthetic database recording (annotations and drawn events beside it; the test model flags none of its
    windows), the test signal whose bands the test model flags, annotated as its bands, and three bad files."""
    from edge_lung.testing import write_signal

    folder = tmp_path_factory.mktemp("report-inputs")
    wav = sorted((synth_db / "ICBHI_final_database").glob("*.wav"))[0]
    for f in wav.parent.glob(wav.stem + ".*"):
        shutil.copy(f, folder / f.name)
    write_signal(folder / "signal.wav", 16.0, 16000)
    (folder / "signal.txt").write_text("0\t3\t0\t0\n3\t6\t1\t0\n6\t9\t0\t1\n9\t12\t1\t1\n12\t15\t0\t0\n")
    (folder / "garbled.wav").write_bytes(b"RIFF not really a wave file")
    sf.write(str(folder / "empty.wav"), np.zeros(0, dtype=np.float32), 16000)
    sf.write(str(folder / "slow.wav"), np.zeros(5000, dtype=np.float32), 1000)
    return folder


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory, classifier, inputs: Path) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("report")
    return out, report_session(classifier, [inputs], out, progress=False)


def decoded_images(page: str) -> list[np.ndarray]:
    import matplotlib.image as mpimg

    return [mpimg.imread(io.BytesIO(base64.b64decode(data)), format="png") for data in _IMG.findall(page)]


def test_pages_are_offline_and_every_image_decodes(report_dir, classifier):
    out, reports = report_dir
    good = [r for r in reports if r.error is None]
    assert len(good) == 2
    assert [sum(d.flag for d in r.result.decisions) > 0 for r in good] == [False, True]  # synthetic, then signal
    for rep in good:
        page = (out / rep.page_name).read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", page) and "<script" not in page and "<link" not in page
        assert "Annotated cycles" in page and "true \\ predicted" in page
        flagged = sum(d.flag for d in rep.result.decisions)
        if not flagged:
            assert "No flagged window" in page
            continue
        images = decoded_images(page)
        assert page.count("<img") == len(images) == 2 + flagged  # spectrogram, timeline, one map per flagged window
        assert all(im.ndim == 3 and im.shape[0] > 100 and im.std() > 0.05 for im in images)
        assert f"{rep.saliencies[0].evaluations} model evaluations" in page and "s per window" in page


def test_report_uses_the_windows_classify_decides(report_dir, classifier):
    _, reports = report_dir
    for rep in (r for r in reports if r.error is None):
        again = classify_file(classifier, rep.result.path, keep_decisions=True)
        assert [(d.window.start, d.window.end) for d in rep.result.decisions] == [
            (d.window.start, d.window.end) for d in again.decisions]
        assert [d.p_abnormal for d in rep.result.decisions] == pytest.approx([d.p_abnormal for d in again.decisions])
        assert [s.window_index for s in rep.saliencies] == [d.window.index for d in again.decisions if d.flag]


def test_bad_files_are_listed_with_their_reason_and_the_others_written(report_dir):
    out, reports = report_dir
    index = (out / "index.html").read_text()
    reasons = {r.result.path.name: r.error for r in reports if r.error is not None}
    assert set(reasons) == {"garbled.wav", "empty.wav", "slow.wav"}
    assert "not a readable audio file" in reasons["garbled.wav"]
    assert "empty audio" in reasons["empty.wav"]
    assert "1000 Hz, expected >= 4000 Hz" in reasons["slow.wav"]
    for name, reason in reasons.items():
        assert name in index and re.sub("'", "&#x27;", reason.split(": ", 1)[1][:30]) in index
    assert "2 recordings reported, 3 not" in index
    assert sorted(p.name for p in out.glob("*.html")) == sorted(
        ["index.html", *(r.page_name for r in reports if r.error is None)])


def test_cli_report_exit_status_names_the_bad_files(model_dir, inputs, tmp_path):
    from typer.testing import CliRunner

    from edge_lung.cli import app

    res = CliRunner().invoke(app, ["report", str(model_dir), str(inputs), "--out", str(tmp_path / "r")])
    assert res.exit_code == 1, res.output
    assert "2 recordings reported, 3 not" in res.output and "slow.wav: error:" in res.output
    res = CliRunner().invoke(app, ["report", str(model_dir), str(tmp_path / "missing"), "--out", str(tmp_path / "r"),
                                   "--overwrite"])  # r is the report written above (issue 26: never replaced silently)
    assert res.exit_code == 2 and "no such file or directory" in res.output


def test_stream_report_writes_the_session_page(classifier, inputs, tmp_path):
    wav = inputs / "signal.wav"
    opts = StreamOptions(replay=wav, display=False, report=tmp_path / "live")
    summary = stream_session(classifier, opts)
    pages = [p for p in (tmp_path / "live").glob("*.html") if p.name != "index.html"]
    assert len(pages) == 1 and (tmp_path / "live" / "index.html").is_file()
    page = pages[0].read_text()
    flagged = classify_file(classifier, wav).summary(classifier.labels)["flagged_windows"]
    assert f"{summary.windows} windows" in page and f"{flagged} flagged" in page
    assert len(decoded_images(page)) == 2 + flagged


# --------------------------------------------------------------------------- a real browser

_PROBE = """<script>
// every image drawn on a canvas: a PNG that does not decode is broken, or paints (almost) nothing
const imgs = [...document.images];
let broken = 0;
for (const img of imgs) {
  if (!img.complete || img.naturalWidth === 0) { broken++; continue; }
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(0, 0, c.width, c.height).data;
  let painted = 0;
  for (let k = 3; k < px.length; k += 4) painted += px[k] > 0;
  if (painted < px.length / 8) broken++;
}
document.body.setAttribute('data-probe', `images=${imgs.length} broken=${broken}`);
</script></body>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(f"no Chromium for the browser test: {CHROMIUM_INSTALL} (as root; `make setup` does it)")


def run_chromium(exe: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_page_in_a_headless_browser(report_dir, tmp_path):
    import matplotlib.image as mpimg

    exe = chromium()
    out, reports = report_dir
    page = out / next(r for r in reports if r.saliencies).page_name
    shot = tmp_path / "shot.png"
    res = run_chromium(exe, tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri())
    console = [line for line in res.stderr.splitlines() if ":CONSOLE" in line]
    assert res.returncode == 0 and not console, console or res.stderr[-2000:]
    pixels = mpimg.imread(str(shot))[..., :3]
    assert pixels.std() > 0.1 and (pixels.mean(axis=2) < 0.9).mean() > 0.05  # not a blank page
    probe = tmp_path / page.name  # the same page plus a script that asks the browser to decode every image
    probe.write_text(page.read_text().replace("</body>", _PROBE))
    res = run_chromium(exe, tmp_path, "--dump-dom", probe.as_uri())
    n = len(_IMG.findall(page.read_text()))
    assert f'data-probe="images={n} broken=0"' in res.stdout, res.stdout[-500:] + res.stderr[-2000:]


def test_overview_is_the_recordings_log_mel_and_stays_bounded():
    """Fed in uneven blocks, the overview equals `log_mel` of the whole recording (one column per frame) until
    the columns reach twice the bound; past it, neighbours merge: never more than 2x the bound (issue 26)."""
    from edge_lung.config import FeatureConfig
    from edge_lung.features import log_mel
    from edge_lung.runtime.explain.report import MelOverview
    from edge_lung.testing import make_signal

    cfg = FeatureConfig()
    x = make_signal(6.0, cfg.sample_rate)
    whole = log_mel(x, cfg)
    exact, pooled = MelOverview(cfg, max_columns=10_000), MelOverview(cfg, max_columns=64)
    for a, b in zip([0, 1000, 17_777, 40_000], [1000, 17_777, 40_000, x.shape[0]], strict=True):
        exact.add(x[a:b])
        pooled.add(x[a:b])
    image, seconds = exact.image()
    np.testing.assert_allclose(image, whole, atol=1e-4)
    assert seconds == pytest.approx(whole.shape[0] * cfg.frame_shift_ms / 1000)
    image, _ = pooled.image()
    assert 64 <= image.shape[0] < 128 and pooled.pool == 8
    np.testing.assert_allclose(image[:-1], whole[: (image.shape[0] - 1) * 8].reshape(-1, 8, whole.shape[1]).mean(1),
                               atol=1e-4)


def test_a_long_recording_keeps_few_windows_audio(classifier, tmp_path):
    """Every window flagged: only the MAX_EXPLAINED highest keep their audio and are explained; the page says so."""
    from edge_lung.runtime.explain.report import MAX_EXPLAINED, analyse_recording
    from edge_lung.testing import make_signal

    x = np.concatenate([make_signal(15.0, 16000)] * 4)
    sf.write(str(tmp_path / "long.wav"), x, 16000, subtype="FLOAT")
    rep = analyse_recording(classifier, tmp_path / "long.wav")
    flagged = sum(d.flag for d in rep.result.decisions)
    assert flagged > MAX_EXPLAINED, "the test needs more flagged windows than are explained"
    assert sum(d.window.audio.size > 0 for d in rep.result.decisions) == len(rep.saliencies) == MAX_EXPLAINED
    kept = sorted(d.p_abnormal for d in rep.result.decisions if d.window.audio.size)
    assert kept[0] >= sorted(d.p_abnormal for d in rep.result.decisions if d.flag)[-MAX_EXPLAINED]
    assert f"{flagged} windows flagged; the {MAX_EXPLAINED} with the highest P(abnormal) explained" in rep.result.note


def test_truncated_flac_is_reported_as_far_as_it_decodes(classifier, tmp_path):
    """`classify` decides a cut FLAC up to the cut; `report` draws the same part and says it is damaged (issue 26)."""
    from edge_lung.testing import write_signal

    write_signal(tmp_path / "whole.flac", 20.0, 16000, subtype="PCM_16")
    data = (tmp_path / "whole.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    out = tmp_path / "r"
    (rep,) = report_session(classifier, [tmp_path / "cut.flac"], out, progress=False)
    assert rep.error is None, rep.error
    assert rep.result.status == "damaged" and "damaged" in rep.result.note
    assert 3.0 < rep.result.duration_s < 20.0 and rep.mel is not None
    assert "damaged" in (out / rep.page_name).read_text()
