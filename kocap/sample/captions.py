"""Korean paragraph descriptions in the style of AI-Hub 71849, following from a Scene.

71849's descriptions are paragraphs (mean ~575 characters, 5-10 sentences): setting, sky and light,
weather, background, the subject with its count and colour, position, motion, camera. Each sentence
here has several phrasings chosen at random, so a model must read the video to know the content and
cannot win by memorising one template. Every fact is stated with the words `facts.py` reads back.
"""

from __future__ import annotations

import numpy as np

from .scene import Scene


def josa(word: str, with_final: str, without_final: str) -> str:
    """Pick a particle by whether the last syllable has a final consonant (받침): 공이 / 자동차가."""
    last = word[-1]
    has_final = "가" <= last <= "힣" and (ord(last) - ord("가")) % 28 != 0
    return word + (with_final if has_final else without_final)


TIME_PHRASE = {"낮": "한낮", "저녁": "해 질 녘 저녁", "밤": "어두운 밤"}
WEATHER_ADJ = {"맑음": "맑은", "흐림": "흐린", "비": "비가 내리는"}
SCENE_NOUN = {"도시": "도시", "자연": "자연", "해변": "해변"}
COUNTER = {"자동차": "대", "공": "개", "사람": "명"}
NUMBER = {1: "한", 2: "두", 3: "세"}
SKY = {
    "낮": (
        "하늘은 밝은 하늘색을 띠고 있으며, 한낮의 햇빛이 화면 전체를 환하게 비추고 있습니다.",
        "밝고 푸른 하늘로 보아 낮 시간대에 촬영된 것으로 보이며, 햇빛이 충분해 화면의 구석구석까지 밝고 또렷하게 드러나고 "
        "사물마다 짧은 그림자가 드리워져 있습니다.",
    ),
    "저녁": (
        "하늘은 주황빛 노을로 물들어 있어 해가 지는 저녁 무렵임을 알 수 있고, 화면은 조금 어둡습니다.",
        "주황색으로 물든 하늘이 저녁 시간대임을 보여 주며, 해가 지평선 가까이 걸려 빛이 한층 부드럽고 따뜻하게 느껴지고 화면 "
        "전체에 붉은 기운이 은은하게 감돌고 있습니다.",
    ),
    "밤": (
        "하늘은 짙은 남색으로 어두워 밤 시간대임을 알 수 있고, 화면 전체가 어둡게 가라앉아 있습니다.",
        "어두운 남색 하늘로 보아 밤에 촬영된 영상이며, 빛이 부족해 사물의 색도 평소보다 어둡게 보이고 배경의 세부 "
        "모습은 어둠 속에 희미하게 묻혀 있습니다.",
    ),
}
WEATHER = {
    "맑음": (
        "날씨는 맑아서 하늘에 구름 한 점 없이 깨끗하고, 색이 선명하게 드러납니다.",
        "맑게 갠 날씨 덕분에 시야가 탁 트여 있고 먼 곳까지 잘 보이며, 대기가 깨끗해 사물의 윤곽과 색이 또렷하게 "
        "드러나 상쾌한 느낌을 줍니다.",
    ),
    "흐림": (
        "날씨는 흐려서 화면 전체에 회색빛 안개가 낀 듯 색이 바래 보입니다.",
        "구름이 잔뜩 낀 흐린 날씨라 햇빛이 약하고, 화면 전체가 잿빛으로 뿌옇게 덮여 있어 색이 바래고 다소 "
        "가라앉은 분위기를 자아냅니다.",
    ),
    "비": (
        "비가 내리고 있어 화면 곳곳에 하얀 빗줄기가 떨어지고, 전체적으로 회색빛이 돕니다.",
        "가느다란 빗줄기가 화면 위에서 아래로 쉴 새 없이 떨어지고 있어 비 오는 날의 축축한 분위기가 느껴지며, 물기를 "
        "머금은 대기 때문에 배경이 전체적으로 뿌옇게 보입니다.",
    ),
}
BACKGROUND = {
    "도시": (
        "배경에는 높이가 서로 다른 회색 건물들이 줄지어 서 있고, 바닥은 회색 도로로 덮여 있습니다.",
        "뒤쪽으로 크고 작은 빌딩들이 빽빽하게 늘어선 도시의 스카이라인이 보이며, 건물 사이로 좁은 틈이 나 있고 "
        "바닥은 반듯하게 포장된 회색 길로 이루어져 있습니다.",
    ),
    "자연": (
        "배경에는 짙은 초록색 언덕이 물결처럼 이어지고, 바닥에는 푸른 풀밭이 넓게 펼쳐져 있습니다.",
        "완만한 언덕이 뒤로 부드럽게 겹겹이 이어지는 자연 풍경이며, 누구의 손길도 닿지 않은 듯한 땅은 초록빛 "
        "풀밭으로 빈틈없이 덮여 있어 평화로운 느낌을 줍니다.",
    ),
    "해변": (
        "배경에는 짙푸른 바다가 수평선을 따라 펼쳐지고, 바닥에는 밝은 모래사장이 넓게 깔려 있습니다.",
        "수평선 너머로 푸른 바다가 끝없이 이어지는 해변으로, 잔잔한 물결이 이는 바다와 맞닿은 땅은 밝은 모래로 "
        "고르게 덮여 있어 탁 트인 느낌을 줍니다.",
    ),
}
SHAPE = {
    "자동차": "자동차는 옆으로 길쭉한 납작한 차체 아래에 검은 바퀴 한 쌍이 달린 모습으로, 멀리서도 알아보기 쉽습니다.",
    "공": "공은 테두리가 매끈한 동그란 모양으로 그려져 있으며, 어느 방향에서 보아도 같은 둥근 형태를 유지합니다.",
    "사람": "사람은 세로로 길쭉한 몸 위에 둥근 머리가 얹힌 모습으로, 똑바로 선 자세를 하고 있는 것처럼 보입니다.",
}
ROW_DETAIL = {
    "위쪽": "하늘과 가까운 화면 위쪽",
    "가운데": "수평선 근처인 화면 가운데",
    "아래쪽": "바닥과 가까운 화면 아래쪽",
}
MOTION_PHRASE = {"오른쪽": "왼쪽에서 오른쪽으로", "왼쪽": "오른쪽에서 왼쪽으로"}
CAMERA = {
    "고정": (
        "카메라는 한 자리에 고정된 채 흔들림 없이 같은 구도로 장면을 담고 있습니다.",
        "카메라가 삼각대에 고정된 듯 구도가 처음부터 끝까지 변하지 않으며, 배경의 모습도 같은 자리에 그대로 "
        "남아 있어 안정적인 화면을 보여 줍니다.",
    ),
    "패닝": (
        "카메라가 천천히 오른쪽으로 회전하며 주변 풍경을 차례로 훑어 줍니다.",
        "카메라는 오른쪽으로 회전하는 패닝 촬영으로, 시간이 흐를수록 배경이 화면 왼쪽 밖으로 밀려나고 새로운 "
        "풍경이 오른쪽에서 나타납니다.",
    ),
    "줌인": (
        "카메라가 점점 가까이 다가가며 화면이 서서히 확대되어 장면이 크게 보입니다.",
        "영상이 진행될수록 줌인되어 화면 속 사물이 점점 크게 확대되며, 처음에는 넓게 보이던 풍경이 끝에 가서는 "
        "가까이에서 바라본 듯한 구도로 바뀝니다.",
    ),
}


def describe(s: Scene, rng: np.random.Generator) -> str:
    """The clip's paragraph: 8-10 sentences, every one following from what is rendered."""
    one = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    time, noun = TIME_PHRASE[s.time], SCENE_NOUN[s.scene]
    group = f"{s.color} {s.obj} {NUMBER[s.count]} {COUNTER[s.obj]}"
    they = s.obj + ("들" if s.count > 1 else "")
    setting = one(
        (
            f"이 영상은 {WEATHER_ADJ[s.weather]} 날 {time}에 {noun}의 모습을 담은 배경 영상으로, 한 장면이 차분하게 이어집니다.",
            f"{WEATHER_ADJ[s.weather]} {time}, {noun}의 풍경을 한 자리에서 바라본 영상입니다.",
            f"이 배경 영상은 {WEATHER_ADJ[s.weather]} 날씨 속 {time}의 {noun} 풍경을 보여 주며, 몇 초 동안 한 장면이 "
            f"이어지는 짧은 영상입니다.",
        )
    )
    subject = one(
        (
            f"화면에는 {josa(group, '이', '가')} 등장하여 시선을 끌며, 다른 사물은 보이지 않습니다.",
            f"장면에서 가장 눈에 띄는 것은 {josa(group, '으로', '로')}, 배경과 뚜렷하게 구분되는 색을 띠고 있어 화면에서 가장 먼저 눈에 들어오며 "
            f"영상의 중심을 이룹니다.",
        )
    )
    place = one(
        (
            f"{josa(they, '은', '는')} {ROW_DETAIL[s.row]}에 자리하고 있어 배경과 함께 한눈에 들어옵니다.",
            f"{josa(they, '이', '가')} 놓인 위치는 {ROW_DETAIL[s.row]}이며, 영상이 이어지는 동안 높이는 달라지지 않고 "
            f"같은 줄을 지킵니다.",
        )
    )
    sentences = [
        setting,
        one(SKY[s.time]),
        one(WEATHER[s.weather]),
        one(BACKGROUND[s.scene]),
        subject,
        place,
        _motion(s, they, one),
        one(CAMERA[s.camera]),
    ]
    if rng.random() < 0.5:
        sentences.insert(5, SHAPE[s.obj])
    if rng.random() < 0.5:
        sentences.append(
            f"전체적으로 {time}의 {noun} 풍경 속에서 {josa(group, '이', '가')} 어우러진 차분한 영상으로, 배경 "
            f"영상이나 영상 편집의 소재로 쓰기에 알맞은 장면입니다."
        )
    return " ".join(sentences)


def _motion(s: Scene, they: str, one) -> str:
    if s.motion == "정지":
        return one(
            (
                f"{josa(they, '은', '는')} 영상이 시작될 때부터 끝날 때까지 제자리에 멈춰 있어 위치가 전혀 바뀌지 않습니다.",
                f"영상 내내 {josa(they, '은', '는')} 자리를 옮기지 않고 멈춰 서 있어, 화면 속에서 변하는 것은 "
                f"배경과 빛뿐입니다.",
            )
        )
    way = MOTION_PHRASE[s.motion]
    return one(
        (
            f"{josa(they, '은', '는')} {way} 천천히 이동하며 화면을 가로지르고, 움직이는 방향은 영상 내내 같습니다.",
            f"시간이 지나면서 {josa(they, '이', '가')} {way} 일정한 속도로 움직이며, 프레임마다 조금씩 자리를 "
            f"옮겨 화면의 반대편에 가까워집니다.",
        )
    )


def describe_image(s: Scene, rng: np.random.Generator) -> str:
    """A one-to-two sentence caption of a still (stage-1 alignment pairs, COCO-length)."""
    one = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    group = f"{s.color} {s.obj} {NUMBER[s.count]} {COUNTER[s.obj]}"
    return one(
        (
            f"{WEATHER_ADJ[s.weather]} {TIME_PHRASE[s.time]}의 {SCENE_NOUN[s.scene]} 풍경입니다. 화면 {s.row}에 {josa(group, '이', '가')} 있습니다.",
            f"{TIME_PHRASE[s.time]}에 찍은 {SCENE_NOUN[s.scene]} 사진으로, {josa(group, '이', '가')} {s.row}에 보입니다.",
        )
    )
