"""Episode storage (:mod:`.episodes`) and video / frame-folder I/O (:mod:`.video`).

Light to import: OpenCV loads only when a video is read or written.
"""
from .episodes import (
    Episode,
    EpisodeDataset,
    EpisodeFileError,
    load_episode,
    read_manifest,
    save_episode,
    update_manifest,
    write_manifest,
)
from .video import VideoError, load_frames, read_frame_folder, read_video, write_frame_folder, write_video

__all__ = [
    "Episode", "EpisodeDataset", "EpisodeFileError", "load_episode", "read_manifest", "save_episode",
    "update_manifest", "write_manifest", "VideoError", "load_frames", "read_frame_folder", "read_video",
    "write_frame_folder", "write_video",
]
