"""Episode storage (:mod:`.episodes`), video / frame-folder I/O (:mod:`.video`) and episodes as score
inputs (:mod:`.inputs`).

Light to import: OpenCV loads only when a video is read or written.
"""
from .episodes import (
    Episode,
    EpisodeDataset,
    EpisodeFileError,
    episode_problem,
    load_episode,
    load_episode_folder,
    read_manifest,
    save_episode,
    update_manifest,
    write_manifest,
)
from .inputs import EpisodeSource, episode_tensors, find_episodes
from .video import VideoError, load_frames, read_frame_folder, read_video, write_frame_folder, write_video

__all__ = [
    "Episode", "EpisodeDataset", "EpisodeFileError", "episode_problem", "load_episode", "load_episode_folder",
    "read_manifest", "save_episode", "update_manifest", "write_manifest", "EpisodeSource", "episode_tensors",
    "find_episodes", "VideoError", "load_frames", "read_frame_folder", "read_video", "write_frame_folder",
    "write_video",
]
