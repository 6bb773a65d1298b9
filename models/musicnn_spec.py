"""What MusiCNN is, apart from its network: constants, tag vocabularies, input patches.

Kept free of PyTorch so that an embedder running the network on ONNX Runtime
(models.musicnn_onnx) never loads it: importing torch alone costs ~500 MB of
resident memory here. `models.musicnn_net` (the PyTorch port) re-exports all of it.
"""

from __future__ import annotations

import librosa
import numpy as np

SAMPLE_RATE = 16000
N_FFT = 512
HOP_LENGTH = 256
N_MELS = 96
# librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1, as in the extractor.
PATCH_FRAMES = 187
EMBEDDING_DIM = 200
TF_BN_EPSILON = 1e-3

# Output order of the MSD models (musicnn/configuration.py, MSD_LABELS).
# fmt: off
MSD_TAGS: tuple[str, ...] = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists",
    "classic rock", "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s",
    "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient", "acoustic",
    "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock",
    "60s", "rnb", "indie pop", "sad", "House", "happy",
)
# Output order of the MagnaTagATune models (musicnn/configuration.py, MTT_LABELS):
# instruments, voices, tempo and loudness, which the MSD vocabulary lacks.
MTT_TAGS: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
    "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera",
    "male", "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman",
    "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir",
    "voice", "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello",
    "no voice", "weird", "country", "metal", "female voice", "choral",
)
# fmt: on


# --------------------------------------------------------------------------- #
# Preprocessing
# --------------------------------------------------------------------------- #


def musicnn_log_mel(audio_16k_mono: np.ndarray, pad_mode: str = "reflect") -> np.ndarray:
    """Return the ``[frames, 96]`` float32 log-compressed mel spectrogram musicnn expects.

    The mel power is rounded to float16 exactly like the original (training data was
    stored as float16 too), but ``10000 * x + 1`` and ``log10`` run in float32: that
    is what numpy < 2 did for ``10000 * float16_array`` in 2019.  Under numpy 2 the
    original line stays in float16 and overflows to ``inf`` for mel power above ~6.55
    (any loud input), which wrecks the network's output, so we do not copy that.

    ``pad_mode`` is the STFT centre padding.  librosa < 0.9 (used to train and ship
    musicnn) reflected the signal; librosa >= 0.9 pads with zeros.  Only the outermost
    frame or two at each end of a recording depend on it.
    """
    audio = np.asarray(audio_16k_mono, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio as a 1-D array, got shape {audio.shape}")
    if audio.size == 0:
        raise ValueError("cannot compute a spectrogram of empty audio")
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio contains NaN or inf samples")
    if audio.size < N_FFT:
        # Too short for one analysis window: extend with digital silence.
        audio = np.pad(audio, (0, N_FFT - audio.size))
    mel = librosa.feature.melspectrogram(
        y=audio,
        sr=SAMPLE_RATE,
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        n_mels=N_MELS,
        pad_mode=pad_mode,
    ).T
    mel16 = mel.astype(np.float16).astype(np.float32)
    return np.log10(np.float32(10000.0) * mel16 + np.float32(1.0)).astype(np.float32)


def musicnn_patches(audio_16k_mono: np.ndarray, pad_mode: str = "reflect") -> np.ndarray:
    """Cut 16 kHz mono audio into ``[n_patches, 187, 96]`` float32 model inputs.

    Matches ``extractor.batch_data`` with the default ``input_overlap=False``:
    consecutive, non-overlapping 187-frame (~3 s) patches starting at frame 0, and
    a trailing remainder shorter than a patch is dropped.

    Deliberate difference: the original fails on audio shorter than one patch.  We
    zero-pad the log-mel frames up to 187 instead, and zero is exactly the value a
    digitally silent frame takes (``log10(10000 * 0 + 1)``), so a 1 s clip is
    embedded as "clip followed by silence" rather than rejected.
    """
    logmel = musicnn_log_mel(audio_16k_mono, pad_mode=pad_mode)
    n_frames = logmel.shape[0]
    if n_frames < PATCH_FRAMES:
        logmel = np.pad(logmel, ((0, PATCH_FRAMES - n_frames), (0, 0)))
        n_frames = PATCH_FRAMES
    n_patches = (n_frames - PATCH_FRAMES) // PATCH_FRAMES + 1
    patches = logmel[: n_patches * PATCH_FRAMES].reshape(n_patches, PATCH_FRAMES, N_MELS)
    return np.ascontiguousarray(patches, dtype=np.float32)
