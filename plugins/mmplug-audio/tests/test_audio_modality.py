"""The audio modality: files and arrays in, Waveform out; errors name the file. Also discovery."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import mmplug_audio
from mmplug import DataError
from mmplug.plugins.loading import load_plugins
from mmplug_audio.modality import AudioModality, Waveform

SAMPLE_RATES = [8000, 22050, 44100]
SECONDS = 0.73  # not a whole number of samples at 16 kHz from every rate


@pytest.fixture
def modality() -> AudioModality:
    return AudioModality()


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", SAMPLE_RATES)
def test_files_load_and_resample_to_16k(
    write_tone, modality, small_encoder, rate, channels, suffix
) -> None:
    path = write_tone(f"tone{suffix}", rate, SECONDS, channels)

    wave = modality.load(path.name, root=path.parent)  # relative to the manifest's folder

    assert isinstance(wave, Waveform)
    assert wave.sample_rate == rate
    assert wave.samples.dtype == torch.float32
    assert wave.samples.shape == (channels, round(SECONDS * rate))
    batch = small_encoder.preprocess([wave])
    (length,) = batch["lengths"].tolist()
    assert abs(length - round(SECONDS * 16000)) <= 1
    assert batch["waveform"].shape == (1, length)
    # Resampled, not just stretched: the tone is still at 440 Hz at 16 kHz.
    spectrum = np.abs(np.fft.rfft(batch["waveform"][0].numpy()))
    peak_hz = np.argmax(spectrum) * 16000 / length
    assert abs(peak_hz - 440) < 3
    # Mono mix is the mean of the channels (amplitudes 0.5 and 0.25).
    expected_peak = 0.5 if channels == 1 else 0.375
    assert batch["waveform"].abs().max().item() == pytest.approx(expected_peak, rel=0.05)


def test_array_pairs(modality) -> None:
    mono = np.zeros(800, dtype=np.float64)
    wave = modality.load((mono, 8000))
    assert wave.samples.shape == (1, 800) and wave.samples.dtype == torch.float32

    stereo = torch.ones(2, 1000, dtype=torch.float16)
    assert modality.load([stereo, np.int64(16000)]).samples.shape == (2, 1000)

    pcm = np.array([-32768, 0, 16384], dtype=np.int16)  # scipy.io.wavfile's int16
    assert modality.load((pcm, 8000)).samples.tolist() == [[-1.0, 0.0, 0.5]]

    assert modality.load(wave) is wave


def test_waveform_pickles(modality) -> None:
    wave = modality.load((np.linspace(-1, 1, 100, dtype=np.float32), 8000))
    again = pickle.loads(pickle.dumps(wave))
    assert again.sample_rate == 8000 and torch.equal(again.samples, wave.samples)
    assert wave.seconds == pytest.approx(100 / 8000)


def test_empty_file_is_an_error_naming_it(modality, tmp_path: Path) -> None:
    path = tmp_path / "silence.wav"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"silence\.wav.*empty"):
        modality.load(path)


def test_text_file_named_wav_is_an_error_naming_it(modality, tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("not audio at all\n")
    with pytest.raises(DataError, match=r"notes\.wav") as info:
        modality.load(path)
    assert isinstance(info.value.__cause__, soundfile.LibsndfileError)


def test_audio_file_without_samples_is_an_error_naming_it(modality, tmp_path: Path) -> None:
    path = tmp_path / "header-only.wav"
    soundfile.write(path, np.zeros((0, 1), dtype=np.float32), 16000)
    with pytest.raises(DataError, match=r"header-only\.wav has no samples"):
        modality.load(path)


def test_a_truncated_wav_is_an_error_naming_it(modality, tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    soundfile.write(path, np.zeros(16000, dtype=np.float32), 16000, subtype="PCM_16")
    whole = path.read_bytes()
    assert modality.load(path).num_frames == 16000
    path.write_bytes(whole[: len(whole) // 2])  # libsndfile alone would read 7,989 frames
    with pytest.raises(DataError, match=r"cut\.wav' is truncated: .*promises 32,000 bytes"):
        modality.load(path)


@pytest.mark.parametrize("suffix", ["wav", "flac"])
def test_a_clip_over_max_seconds_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    path = tmp_path / f"long.{suffix}"
    soundfile.write(path, np.zeros(8000 * 3, dtype=np.float32), 8000)  # 3 s
    assert AudioModality(max_seconds=3).load(path).seconds == 3

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("samples were decoded")

    monkeypatch.setattr(soundfile, "read", no_decoding)
    with pytest.raises(DataError, match=rf"long\.{suffix}' is 3.0 s long, over .* 2.5 s"):
        AudioModality(max_seconds=2.5).load(path)


def test_missing_file_is_an_error_naming_it(modality, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.flac"):
        modality.load("missing.flac", root=tmp_path)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ((np.zeros(10, dtype=np.float32), 0), "sample rate must be positive"),
        ((np.zeros(10, dtype=np.float32), 16000.0), "sample rate must be an int"),
        ((np.zeros(10, dtype=np.float32), True), "sample rate must be an int"),
        ((np.zeros((48000, 2), dtype=np.float32), 16000), r"transpose"),
        ((np.zeros((1, 2, 3), dtype=np.float32), 16000), r"\[channels, time\]"),
        ((np.zeros(0, dtype=np.float32), 16000), "no samples"),
        ((np.array([0.0, np.nan], dtype=np.float32), 16000), "NaN"),
        ((np.zeros(4, dtype=np.uint16), 16000), "unsupported dtype"),
        (([0.0, 0.1], 16000), "numpy array or torch tensor"),
        (42, "expected a path"),
    ],
)
def test_bad_values_are_data_errors(modality, value, message) -> None:
    with pytest.raises(DataError, match=message):
        modality.load(value)


def test_installed_entry_point_is_discovered() -> None:
    host = load_plugins(environ={})
    (record,) = [r for r in host.records if r.distribution == "mmplug-audio"]
    assert (record.name, record.version, record.status) == (
        "audio",
        mmplug_audio.__version__,
        "loaded",
    )
    assert sorted(record.components) == [
        "encoder:hubert",
        "encoder:mel-cnn",
        "encoder:wav2vec2",
        "modality:audio",
    ]
    spec = host.registry.get("encoder", "mmplug-audio:mel-cnn")
    assert spec.modality == "audio"


def test_waveform_is_importable_from_the_package() -> None:
    assert mmplug_audio.Waveform is Waveform
