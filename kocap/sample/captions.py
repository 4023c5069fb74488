"""Korean multi-sentence descriptions in the style of AI-Hub 71849, following from a Scene.

Each sentence has several phrasings chosen at random, so a model must read the video to know the
content and cannot win by memorising one template.
"""
from __future__ import annotations

import numpy as np

from .scene import Scene


def josa(word: str, with_final: str, without_final: str) -> str:
    """Pick a particle by whether the last syllable has a final consonant (받침): 공이 / 자동차가."""
    last = word[-1]
    has_final = "가" <= last <= "힣" and (ord(last) - ord("가")) % 28 != 0
    return word + (with_final if has_final else without_final)


TIME_PHRASE = {"낮": "낮", "저녁": "해 질 녘 저녁", "밤": "어두운 밤"}
WEATHER_ADJ = {"맑음": "맑은", "흐림": "흐린", "비": "비가 내리는"}
WEATHER_DESC = {"맑음": "맑고 화창합니다", "흐림": "구름이 잔뜩 끼어 흐립니다", "비": "비가 내리고 있습니다"}
SCENE_NOUN = {"도시": "도시", "자연": "자연", "해변": "해변"}
SCENE_DETAIL = {
    "도시": ("배경에는 여러 채의 회색 건물이 늘어서 있습니다.", "뒤쪽으로 높고 낮은 빌딩들이 줄지어 서 있습니다."),
    "자연": ("초록빛 언덕과 풀밭이 배경을 이루고 있습니다.", "뒤로는 푸른 언덕이 완만하게 이어집니다."),
    "해변": ("푸른 바다와 모래사장이 넓게 펼쳐져 있습니다.", "모래사장 너머로 파란 바다가 보입니다."),
}
MOTION_PHRASE = {"오른쪽": "왼쪽에서 오른쪽으로", "왼쪽": "오른쪽에서 왼쪽으로"}
CAMERA_SENTENCES = {
    "고정": ("카메라는 한 자리에 고정되어 있습니다.", "카메라의 움직임 없이 촬영되었습니다."),
    "패닝": ("카메라가 천천히 오른쪽으로 회전하며 주변을 비춥니다.", "카메라는 오른쪽으로 이동하며 풍경을 담습니다."),
    "줌인": ("카메라가 점점 가까이 다가가며 화면이 확대됩니다.", "화면이 서서히 줌인되며 장면이 커집니다."),
}


def describe(s: Scene, rng: np.random.Generator) -> str:
    """The clip's description: setting, background, object, motion and camera sentences."""
    one = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    time, noun = TIME_PHRASE[s.time], SCENE_NOUN[s.scene]
    thing = f"{s.color} {s.obj}"
    setting = one((
        f"이 영상은 {WEATHER_ADJ[s.weather]} 날 {time}에 촬영된 {noun} 풍경입니다.",
        f"영상은 {time}의 {josa(noun, '을', '를')} 담고 있으며, 날씨는 {WEATHER_DESC[s.weather]}.",
        f"{WEATHER_ADJ[s.weather]} {time}, {noun}의 모습이 화면에 펼쳐집니다.",
    ))
    place = one((
        f"화면 {s.row}에는 {josa(thing, '이', '가')} 보입니다.",
        f"{josa(thing, '이', '가')} 화면 {s.row}에 자리하고 있습니다.",
    ))
    if s.motion == "정지":
        motion = one((f"{josa(s.obj, '은', '는')} 화면 가운데에 멈춰 있습니다.", f"{josa(thing, '은', '는')} 움직이지 않고 가만히 있습니다."))
    else:
        way = MOTION_PHRASE[s.motion]
        motion = one((f"{josa(s.obj, '은', '는')} {way} 천천히 움직입니다.", f"{josa(thing, '이', '가')} {way} 이동하고 있습니다."))
    sentences = [setting, one(SCENE_DETAIL[s.scene]), place, motion, one(CAMERA_SENTENCES[s.camera])]
    if s.weather == "비":
        sentences.insert(2, "화면 곳곳에 빗줄기가 떨어집니다.")
    return " ".join(sentences)


def describe_image(s: Scene, rng: np.random.Generator) -> str:
    """A one-to-two sentence caption of a still (stage-1 alignment pairs)."""
    one = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    thing = f"{s.color} {s.obj}"
    return one((
        f"{WEATHER_ADJ[s.weather]} {TIME_PHRASE[s.time]}의 {SCENE_NOUN[s.scene]} 풍경입니다. 화면 {s.row}에 {josa(thing, '이', '가')} 있습니다.",
        f"{TIME_PHRASE[s.time]}에 찍은 {SCENE_NOUN[s.scene]} 사진으로, {josa(thing, '이', '가')} {s.row}에 보입니다.",
    ))
