"""A real-music corpus for the benches, built from Debian-packaged free game soundtracks.

Nothing here is committed: the audio is made on the machine from the packages
`ufoai-music` (Ogg Vorbis, 44.1 kHz stereo, in a .pk3 zip), `warzone2100-music`
(Opus, 48 kHz) and `fb-music-high` (Frozen Bubble, Ogg Vorbis). The Ogg files
are kept as they are; the Warzone tracks are transcoded by ffmpeg to MP3 and
FLAC at 44.1 kHz stereo, alternately, so the corpus mixes the three formats a
library holds. Install the packages with

    sudo apt-get install ufoai-music warzone2100-music fb-music-high

Usage: .venv/bin/python bench/real_corpus.py [--out DIR] [--smoke]
(prints one JSON line: files per format, hours of audio, where).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import smoke
import soundfile as sf

UFOAI_PK3 = Path("/usr/share/games/ufoai/base/0music.pk3")
WARZONE_MUSIC = Path("/usr/share/games/warzone2100/music")
FROZEN_BUBBLE_SOUNDS = Path("/usr/share/games/frozen-bubble/snd")
DEFAULT_DIR = Path.home() / ".cache" / "sonicbus" / "bench-corpus"
MIN_SECONDS = 30.0  # game jingles and effects are not music tracks


def build_corpus(out: Path = DEFAULT_DIR, max_per_source: int | None = None) -> list[Path]:
    """The corpus' files (made once; a file already there is kept), sorted by name."""
    out.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    made += _ufoai(out, max_per_source)
    made += _warzone(out, max_per_source)
    made += _frozen_bubble(out, max_per_source)
    if not made:
        raise SystemExit(
            "no source music found: sudo apt-get install ufoai-music warzone2100-music "
            "fb-music-high"
        )
    return sorted(made)


def interleaved(files: list[Path], limit: int | None) -> list[Path]:
    """Up to `limit` files taking formats in turn (ogg, mp3, flac, ...), so any prefix mixes."""
    by_format: dict[str, list[Path]] = {}
    for file in sorted(files):
        by_format.setdefault(file.suffix, []).append(file)
    picked: list[Path] = []
    queues = [list(v) for _, v in sorted(by_format.items())]
    while any(queues) and (limit is None or len(picked) < limit):
        for queue in queues:
            if queue and (limit is None or len(picked) < limit):
                picked.append(queue.pop(0))
    return picked


def describe(files: list[Path]) -> dict[str, object]:
    seconds = sum(sf.info(str(f)).duration for f in files)
    return {
        "files": len(files),
        "formats": dict(Counter(f.suffix.lstrip(".") for f in files)),
        "audio_hours": round(seconds / 3600, 3),
    }


def _long_enough(path: Path) -> bool:
    try:
        return sf.info(str(path)).duration >= MIN_SECONDS
    except (sf.LibsndfileError, RuntimeError):
        return False


def _ufoai(out: Path, limit: int | None) -> list[Path]:
    if not UFOAI_PK3.is_file():
        return []
    made = []
    with zipfile.ZipFile(UFOAI_PK3) as pk3:
        names = sorted(n for n in pk3.namelist() if n.endswith(".ogg"))[:limit]
        for name in names:
            target = out / f"ufoai-{Path(name).name}"
            if not target.exists():
                with pk3.open(name) as source, open(target.with_suffix(".part"), "wb") as sink:
                    shutil.copyfileobj(source, sink)
                target.with_suffix(".part").rename(target)
            if _long_enough(target):
                made.append(target)
    return made


def _warzone(out: Path, limit: int | None) -> list[Path]:
    if not WARZONE_MUSIC.is_dir():
        return []
    if shutil.which("ffmpeg") is None:
        raise SystemExit(
            "ffmpeg is needed to transcode the Warzone 2100 tracks: apt install ffmpeg"
        )
    made = []
    sources = sorted(WARZONE_MUSIC.rglob("*.opus"))[:limit]
    for index, source in enumerate(sources):
        stem = "-".join(source.relative_to(WARZONE_MUSIC).with_suffix("").parts)
        mp3 = index % 2 == 0
        codec = (
            ["-c:a", "libmp3lame", "-b:a", "192k", "-f", "mp3"]
            if mp3
            else ["-c:a", "flac", "-f", "flac"]
        )
        target = out / f"warzone-{stem}.{'mp3' if mp3 else 'flac'}"
        if not target.exists():
            part = target.with_name(target.name + ".part")
            subprocess.run(
                ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-ar", "44100", "-ac", "2",
                 "-map_metadata", "-1", *codec, str(part)],
                check=True,
            )  # fmt: skip
            part.rename(target)
        if _long_enough(target):
            made.append(target)
    return made


def _frozen_bubble(out: Path, limit: int | None) -> list[Path]:
    if not FROZEN_BUBBLE_SOUNDS.is_dir():
        return []
    made = []
    for source in sorted(FROZEN_BUBBLE_SOUNDS.glob("*.ogg"))[:limit]:
        if not _long_enough(source):
            continue
        target = out / f"frozen-bubble-{source.name}"
        if not target.exists():
            shutil.copyfile(source, target)
        made.append(target)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR)
    smoke.add_flag(parser)  # one file per source, in a temporary folder
    args = parser.parse_args()
    sources_present = UFOAI_PK3.is_file() or WARZONE_MUSIC.is_dir()
    if args.smoke and not sources_present:
        print(json.dumps({"bench": "real_corpus", "smoke": True,
                          "skipped": "no Debian music packages on this machine"}))  # fmt: skip
        return
    out = args.out if not args.smoke else Path(tempfile.mkdtemp(prefix="sonicbus-corpus-"))
    files = build_corpus(out, max_per_source=1 if args.smoke else None)
    print(json.dumps({"bench": "real_corpus", "smoke": args.smoke, "folder": str(out),
                      **describe(files)}))  # fmt: skip
    if args.smoke:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
