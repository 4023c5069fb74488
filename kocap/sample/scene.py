"""Scenes of the embedded sample: attributes drawn at random (seeded) and rendered to frames.

Everything a caption says is visible: sky colour = time of day, rain streaks and grey haze =
weather, the ground = scene type, one to three objects of one kind, colour and shape side by side,
moving together in one direction, and a camera that stays, pans or zooms.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SCENES = ("도시", "자연", "해변")
TIMES = ("낮", "저녁", "밤")
WEATHERS = ("맑음", "흐림", "비")
OBJECTS = ("자동차", "공", "사람")
COUNTS = (1, 2, 3)
COLORS = {
    "빨간색": (220, 40, 40),
    "파란색": (40, 80, 230),
    "노란색": (240, 220, 40),
    "흰색": (245, 245, 245),
    "보라색": (150, 50, 200),
}
ROWS = ("위쪽", "가운데", "아래쪽")
MOTIONS = ("오른쪽", "왼쪽", "정지")
CAMERAS = ("고정", "패닝", "줌인")

SKY = {"낮": (120, 180, 240), "저녁": (240, 140, 70), "밤": (20, 25, 60)}
GROUND = {"도시": (110, 110, 115), "자연": (60, 150, 60), "해변": (225, 205, 150)}
LIGHT = {"낮": 1.0, "저녁": 0.8, "밤": 0.45}


@dataclass(frozen=True)
class Scene:
    scene: str
    time: str
    weather: str
    obj: str
    color: str
    count: int
    row: str
    motion: str
    camera: str

    def as_dict(self) -> dict:
        return asdict(self)


def draw_scene(rng: np.random.Generator) -> Scene:
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    return Scene(
        pick(SCENES),
        pick(TIMES),
        pick(WEATHERS),
        pick(OBJECTS),
        pick(list(COLORS)),
        pick(COUNTS),
        pick(ROWS),
        pick(MOTIONS),
        pick(CAMERAS),
    )


def render(scene: Scene, size: int, num_frames: int, rng: np.random.Generator, width: int | None = None) -> np.ndarray:
    """Frames (T, H, W, 3) uint8. `width` (default square) lets still images take other shapes."""
    h, w = size, width or size
    out = np.empty((num_frames, h, w, 3), np.uint8)
    background = _background(scene, h, w * 2, rng)  # twice as wide, so the camera can pan
    for t in range(num_frames):
        p = t / max(1, num_frames - 1)
        frame = _camera(background, scene.camera, p, h, w)
        _draw_object(frame, scene, p)
        if scene.weather == "비":
            _rain(frame, rng)
        out[t] = np.clip(frame * LIGHT[scene.time], 0, 255).astype(np.uint8)
    return out


def _background(scene: Scene, h: int, w: int, rng) -> np.ndarray:
    img = np.empty((h, w, 3), np.float32)
    horizon = int(h * 0.55)
    img[:horizon] = SKY[scene.time]
    img[horizon:] = GROUND[scene.scene]
    if scene.scene == "도시":  # a skyline of grey blocks
        x = 0
        while x < w:
            bw, bh = int(rng.integers(w // 20, w // 10)), int(rng.integers(h // 6, h // 2.5))
            img[horizon - bh : horizon, x : x + bw] = 70 + int(rng.integers(0, 40))
            x += bw + int(rng.integers(1, 4))
    elif scene.scene == "자연":  # dark green hills
        xs = np.arange(w)
        crest = horizon - (h * 0.12 * (1 + np.sin(xs / w * 12 + rng.uniform(0, 6)))).astype(int)
        for x, c in zip(xs, crest):
            img[c:horizon, x] = (30, 100, 40)
    else:  # sea band above the sand
        img[horizon - h // 8 : horizon] = (30, 90, 170)
    # vertical texture so a pan is visible
    img[:, :: max(4, w // 24)] *= 0.85
    if scene.weather in ("흐림", "비"):
        img = img * 0.55 + 128 * 0.45
    return img


def _camera(bg: np.ndarray, camera: str, p: float, h: int, w: int) -> np.ndarray:
    if camera == "패닝":  # the camera turns right: the background slides left
        x0 = int(p * (bg.shape[1] - w))
        return bg[:, x0 : x0 + w].copy()
    view = bg[:, :w]
    if camera == "줌인":
        scale = 1 + 0.6 * p
        ys = ((np.arange(h) - h / 2) / scale + h / 2).astype(int).clip(0, h - 1)
        xs = ((np.arange(w) - w / 2) / scale + w / 2).astype(int).clip(0, w - 1)
        return view[ys][:, xs].copy()
    return view.copy()


def _draw_object(frame: np.ndarray, scene: Scene, p: float) -> None:
    h, w = frame.shape[:2]
    s = max(6, int(min(h, w) * (0.3, 0.24, 0.2)[scene.count - 1]))  # 20-30% of the frame: large enough to learn
    cy = int(h * {"위쪽": 0.25, "가운데": 0.5, "아래쪽": 0.75}[scene.row])
    travel = {"오른쪽": (0.2 + 0.6 * p), "왼쪽": (0.8 - 0.6 * p), "정지": 0.5}[scene.motion]
    for k in range(scene.count):  # side by side, 1.5 sizes apart, moving together
        _draw_one(frame, scene, int(w * travel + (k - (scene.count - 1) / 2) * 1.5 * s), cy, s)


def _draw_one(frame: np.ndarray, scene: Scene, cx: int, cy: int, s: int) -> None:
    h, w = frame.shape[:2]
    colour = COLORS[scene.color]
    yy, xx = np.ogrid[:h, :w]
    if scene.obj == "공":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= (s // 2) ** 2
    elif scene.obj == "자동차":  # wide and low, with dark wheels
        mask = (abs(yy - cy) <= s // 4) & (abs(xx - cx) <= s * 2 // 3)
        wheels = ((yy - (cy + s // 4)) ** 2 + (xx - (cx - s // 3)) ** 2 <= (s // 7) ** 2) | (
            (yy - (cy + s // 4)) ** 2 + (xx - (cx + s // 3)) ** 2 <= (s // 7) ** 2
        )
        frame[wheels] = (20, 20, 20)
    else:  # a person: tall and narrow, with a head
        mask = (abs(yy - cy - s // 6) <= s // 2 - s // 6) & (abs(xx - cx) <= s // 6)
        mask |= (yy - (cy - s // 2 + s // 8)) ** 2 + (xx - cx) ** 2 <= (s // 6) ** 2
    frame[mask] = colour


def _rain(frame: np.ndarray, rng) -> None:
    h, w = frame.shape[:2]
    for _ in range(max(4, w // 6)):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        frame[y : y + max(3, h // 12), x] = 200
