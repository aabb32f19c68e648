import warnings

import numpy as np
import pytest
import soundfile as sf

from edge_lung.audio import AudioError, StreamResampler, cyclic_pad, load_audio, resample


def _tone(freq: float, rate: int, seconds: float = 2.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spec)])


@pytest.mark.parametrize(("rate", "subtype"), [(4000, "PCM_16"), (44100, "PCM_24"), (10000, "PCM_16"),
                                               (48000, "PCM_24")])
def test_resampling_keeps_frequency_and_level(tmp_path, rate, subtype):
    path = tmp_path / f"tone_{rate}.wav"
    sf.write(path, _tone(440.0, rate), rate, subtype=subtype)
    wave, out_rate = load_audio(path, 16000)
    assert out_rate == 16000
    assert abs(len(wave) - 32000) <= 1
    assert abs(_peak_hz(wave, 16000) - 440.0) < 2.0
    core = wave[2000:-2000]
    rms = float(np.sqrt(np.mean(core**2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_downsampling_removes_content_above_new_nyquist():
    x = _tone(7000.0, 44100) + _tone(12000.0, 44100)  # 12 kHz must not alias into the 0-8 kHz band
    y = resample(x, 44100, 16000)
    spec = np.abs(np.fft.rfft(y[4000:-4000] * np.hanning(len(y) - 8000)))
    f = np.fft.rfftfreq(len(y) - 8000, 1 / 16000)
    alias = spec[(f > 3500) & (f < 4500)].max()  # 12 kHz would alias to 4 kHz
    assert alias < 1e-3 * spec.max()


@pytest.mark.parametrize("block", [160, 1600, 16000, 4410])
def test_stream_resampler_equals_whole_signal(block):
    x = np.random.default_rng(0).standard_normal(44100 * 3).astype(np.float32) * 0.1
    whole = resample(x, 44100, 16000)
    stream = StreamResampler(44100, 16000)
    parts = [stream.process(x[i : i + block]) for i in range(0, len(x), block)]
    parts.append(stream.flush())
    blocks = np.concatenate(parts)
    assert blocks.shape == whole.shape
    np.testing.assert_allclose(blocks, whole, atol=1e-6)


def test_stereo_is_downmixed_with_warning(tmp_path):
    path = tmp_path / "stereo.wav"
    left, right = _tone(300, 16000), _tone(300, 16000) * 0.0
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="PCM_16")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wave, _ = load_audio(path, 16000)
    assert any("downmixing" in str(w.message) for w in caught)
    np.testing.assert_allclose(wave, left / 2, atol=1e-4)


def test_bad_audio_files_name_the_file(tmp_path):
    with pytest.raises(AudioError, match="missing.wav: file not found"):
        load_audio(tmp_path / "missing.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="bad.wav: not a readable audio file"):
        load_audio(bad)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav: empty audio"):
        load_audio(empty)


def test_cyclic_pad_tiles_exactly():
    x = np.arange(1, 4, dtype=np.float32)
    np.testing.assert_array_equal(cyclic_pad(x, 8), [1, 2, 3, 1, 2, 3, 1, 2])
    np.testing.assert_array_equal(cyclic_pad(np.arange(10, dtype=np.float32), 4), [0, 1, 2, 3])
    long = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    padded = cyclic_pad(long[:300], 1000)
    for k in range(3):
        np.testing.assert_array_equal(padded[300 * k : 300 * (k + 1)], long[:300])
    np.testing.assert_array_equal(padded[900:], long[:100])
    with pytest.raises(ValueError, match="empty"):
        cyclic_pad(np.zeros(0, np.float32), 10)
