"""Sample catalogues (医保目录) for `yibao-gateway init` and the catalogue benchmark.

Pure and deterministic: rows come from `random.Random(seed)` and fixed dates, never from today,
so the same profile and seed give the same file. Codes follow the national formats:

- Western drugs (西药), 23 characters: "X" + ATC group (5) + generic-name serial (4) + dosage
  form (4) + specification (4) + manufacturer (5), e.g. "XA01ABD075A002010100483";
- Chinese patent medicines (中成药), 20: "Z" + category (5) + name serial (5) + form (2) + spec (2)
  + manufacturer (5), e.g. "ZA04BAJ0006010102475";
- medical services (医疗服务项目), 15 digits: "00" + chapter (2) + section (2) + item (9),
  e.g. "001102000010000";
- medical consumables (医用耗材), 27: "C" + category (6) + generic name (5) + material and
  specification (6) + manufacturer (9).

Both profiles also hold the codes that the simulators, the load generator and the end-to-end
tests put on bill lines (`LEGACY_ROWS`), so their traffic finds its codes in the catalogue.
"""

from __future__ import annotations

import csv
import io
import itertools
import random
from collections.abc import Iterable, Iterator, Sequence

from gateway.core.catalogue import CATALOGUE_HEADER

__all__ = ["LEGACY_ROWS", "PENGZHOU_ROWS", "catalogue_csv", "generated_rows", "iter_generated_rows", "small_rows"]

Fields = tuple[str, str, str, str, str, str, str, str, str]

# A county's list: the national drug list's generic names in several makers and packs, the
# province's service items and a few consumables. At least 20,000 rows (the profile's promise).
PENGZHOU_ROWS = 24_000
# Shares (permille) of the code families in a generated catalogue.
FAMILY_PERMILLE = {"western": 640, "chinese": 260, "service": 80, "consumable": 20}
# Class mix (甲 01, 乙 02, 丙 03) per family, permille.
CLASS_PERMILLE = {"western": (330, 520, 150), "chinese": (250, 600, 150), "service": (450, 400, 150),
                  "consumable": (100, 600, 300)}
OTC_PERMILLE = {"western": 330, "chinese": 450, "service": 0, "consumable": 0}
CAPPED_PERMILLE = 150       # rows with a price cap (限价)
RESTRICTED_PERMILLE = 80    # rows whose use is restricted (限定支付)
OWN_PROP_PERMILLE = 200     # class-02 rows with their own self-pay-first share
SUCCESSIVE_PERMILLE = 10    # codes with a first row ended and a second row from the next day
OWN_PROPS = ("50", "100", "150", "200", "300")
# Fixed dates (not "today"): the catalogue's edition and the day a price revision took effect.
EDITION_FROM = "2024-01-01"
REVISION_TO, REVISION_FROM = "2024-12-31", "2025-01-01"
EXPIRED = ("2022-01-01", "2023-06-30")
FUTURE_FROM = "2031-01-01"

WESTERN_NAMES = (
    "阿莫西林", "头孢克肟", "头孢呋辛酯", "头孢拉定", "阿奇霉素", "罗红霉素", "克拉霉素", "左氧氟沙星",
    "甲硝唑", "布洛芬", "对乙酰氨基酚", "双氯芬酸钠", "洛索洛芬钠", "塞来昔布", "阿司匹林", "氯吡格雷",
    "二甲双胍", "格列美脲", "阿卡波糖", "硝苯地平", "氨氯地平", "缬沙坦", "厄贝沙坦", "美托洛尔",
    "阿托伐他汀钙", "瑞舒伐他汀钙", "奥美拉唑", "兰索拉唑", "雷贝拉唑钠", "多潘立酮", "莫沙必利",
    "蒙脱石", "氯雷他定", "西替利嗪", "孟鲁司特钠", "沙丁胺醇", "布地奈德", "甲钴胺", "维生素C",
    "葡萄糖酸钙", "氨溴索", "右美沙芬", "复方甘草", "碳酸钙D3", "叶酸", "硫酸亚铁", "螺内酯", "呋塞米",
)
WESTERN_FORMS = (("片", "A001"), ("胶囊", "A002"), ("颗粒", "A003"), ("缓释片", "A004"),
                 ("肠溶片", "A005"), ("分散片", "A006"), ("口服溶液", "A007"), ("注射液", "B001"),
                 ("软膏", "C001"), ("滴眼液", "C002"))
WESTERN_SPECS = ("0.1g", "0.25g", "0.5g", "5mg", "10mg", "20mg", "40mg", "100mg", "200mg", "500mg")
PACKS = ("*12片", "*24粒", "*30片", "*10袋", "*6支", "*1瓶", "*20片", "*48粒")
ATC_GROUPS = ("A02BC", "A07BC", "B01AC", "C07AB", "C08CA", "C09CA", "C10AA", "J01CA", "J01DB",
              "J01FA", "J01MA", "M01AE", "N02BE", "R05CB", "R06AX", "A10BA")
CHINESE_NAMES = (
    "感冒清热", "板蓝根", "连花清瘟", "藿香正气", "六味地黄", "复方丹参", "银翘解毒", "双黄连",
    "小柴胡", "云南白药", "牛黄解毒", "逍遥", "补中益气", "速效救心", "清开灵", "蒲地蓝消炎",
    "抗病毒", "香砂养胃", "麝香保心", "血塞通", "金嗓子喉", "三九胃泰", "川贝枇杷", "桂枝茯苓",
)
CHINESE_FORMS = (("颗粒", "01"), ("胶囊", "02"), ("片", "03"), ("丸", "04"), ("口服液", "05"),
                 ("水", "06"), ("滴丸", "07"), ("膏", "08"))
CHINESE_CATEGORIES = ("A01AA", "A04BA", "A06AB", "A12BA", "B02AA", "C01BA", "D01AA")
SERVICES = (("11", "一般诊疗费"), ("11", "普通门诊诊查费"), ("12", "肌肉注射"), ("12", "静脉注射"),
            ("12", "雾化吸入"), ("12", "换药"), ("25", "血常规检查"), ("25", "尿常规检查"),
            ("25", "血糖测定"), ("25", "肝功能检测"), ("22", "心电图检查"), ("23", "腹部超声检查"),
            ("21", "胸部X线摄影"), ("21", "CT平扫"), ("43", "针刺"), ("43", "灸法"), ("43", "推拿"),
            ("43", "拔罐"), ("33", "清创缝合"), ("42", "康复评定"))
CONSUMABLES = ("一次性使用无菌注射器", "医用脱脂纱布", "医用胶带", "一次性使用输液器", "医用外科口罩",
               "血糖试纸", "弹力绷带", "医用棉签")

# The simulators' drug codes ("XA" Western, "ZB" Chinese) get classes in the simulator's weights
# (55/35/10 over 20 codes) and OTC on three codes in four (its 75 % at pharmacies): without a
# catalogue, and in traces recorded before it read one, it draws class and OTC per line, so these
# rows are the closest fixed match (with a catalogue it sends each row's own). XA01 is the 甲类 OTC
# line of the end-to-end tests.
_LEGACY_CLASSES = ("01", "01", "02", "01", "02", "01", "03", "02", "01", "02",
                   "01", "01", "02", "01", "02", "01", "03", "01", "02", "01")


def _legacy_drug(prefix: str, n: int, name: str) -> Fields:
    level = _LEGACY_CLASSES[(n - 1) % len(_LEGACY_CLASSES)]
    return (f"{prefix}{n:02d}", name, level, "0" if n % 4 == 0 else "1", "", "", "0", "", "")


# The codes bill lines carry today, with the class and OTC flag their senders use: the load
# generator's fixed 3-line bill, the end-to-end tests' codes (their class is part of the code),
# the ops client's OTC line and the simulators' drug codes.
LEGACY_ROWS: tuple[Fields, ...] = (
    ("LOAD010001", "负载测试甲类药品", "01", "1", "", "", "0", "", ""),
    ("LOAD020002", "负载测试乙类药品", "02", "1", "", "", "0", "", ""),
    ("LOAD030003", "负载测试丙类药品", "03", "0", "", "", "0", "", ""),
    ("XB02", "布洛芬缓释胶囊 0.3g*20粒", "02", "1", "", "", "0", "", ""),
    ("XA01AAA001", "维生素C片 0.1g*100片", "01", "1", "", "", "0", "", ""),
    *((f"CR{level}{n:04d}", f"崩溃测试{level}类药品{n}", level, "1", "", "", "0", "", "")
      for level in ("01", "02", "03") for n in (1, 2, 3)),
    *(_legacy_drug("XA", n, WESTERN_NAMES[n - 1] + WESTERN_FORMS[n % 3][0]) for n in range(1, 30)),
    *(_legacy_drug("ZB", n, CHINESE_NAMES[n - 1] + CHINESE_FORMS[n % 4][0]) for n in range(1, 15)),
)


def _pick(rng: random.Random, permille: Sequence[int], values: Sequence[str]) -> str:
    return rng.choices(values, weights=permille)[0]


def _chance(rng: random.Random, permille: int) -> bool:
    return rng.randrange(1000) < permille


def _western(rng: random.Random, serial: int) -> tuple[str, str]:
    generic = rng.randrange(len(WESTERN_NAMES))
    form, form_code = rng.choice(WESTERN_FORMS)
    spec = rng.randrange(len(WESTERN_SPECS))
    code = (f"X{rng.choice(ATC_GROUPS)}{chr(65 + generic % 26)}{generic:03d}{form_code}"
            f"{spec + 1:02d}{rng.randint(1, 8):02d}{serial % 100_000:05d}")
    return code, f"{WESTERN_NAMES[generic]}{form} {WESTERN_SPECS[spec]}{rng.choice(PACKS)}"


def _chinese(rng: random.Random, serial: int) -> tuple[str, str]:
    generic = rng.randrange(len(CHINESE_NAMES))
    form, form_code = rng.choice(CHINESE_FORMS)
    code = (f"Z{rng.choice(CHINESE_CATEGORIES)}{chr(65 + generic % 26)}{generic:04d}{form_code}"
            f"{rng.randint(1, 9):02d}{serial % 100_000:05d}")
    return code, f"{CHINESE_NAMES[generic]}{form}{rng.choice(PACKS)}"


def _service(rng: random.Random, serial: int) -> tuple[str, str]:
    chapter, name = rng.choice(SERVICES)
    return f"00{chapter}{rng.randint(1, 9):02d}{serial % 10**9:09d}", name


def _consumable(rng: random.Random, serial: int) -> tuple[str, str]:
    name = rng.choice(CONSUMABLES)
    return (f"C{rng.randint(1, 20):02d}{rng.randint(1, 99):02d}{rng.randint(1, 99):02d}"
            f"{rng.randint(1, 99_999):05d}{rng.randint(1, 999_999):06d}{serial % 10**9:09d}", name)


_FAMILIES = {"western": _western, "chinese": _chinese, "service": _service, "consumable": _consumable}


def _terms(rng: random.Random, family: str, level: str) -> tuple[str, str, str, str]:
    """otc, selfpay_prop_permille, pric_uplmt_fen, lmt_used of one generated row."""
    otc = "1" if _chance(rng, OTC_PERMILLE[family]) else "0"
    prop = rng.choice(OWN_PROPS) if level == "02" and _chance(rng, OWN_PROP_PERMILLE) else ""
    cap = str(rng.randint(50, 50_000)) if _chance(rng, CAPPED_PERMILLE) else ""
    restricted = "1" if _chance(rng, RESTRICTED_PERMILLE) else "0"
    return otc, prop, cap, restricted


def _generated(rng: random.Random, serial: int) -> list[Fields]:
    """One generated code: its row, or two successive rows (a price revision) for a few codes."""
    family = _pick(rng, list(FAMILY_PERMILLE.values()), list(FAMILY_PERMILLE))
    code, name = _FAMILIES[family](rng, serial)
    level = _pick(rng, CLASS_PERMILLE[family], ("01", "02", "03"))
    otc, prop, cap, restricted = _terms(rng, family, level)
    if not _chance(rng, SUCCESSIVE_PERMILLE):
        return [(code, name, level, otc, prop, cap, restricted, EDITION_FROM if serial % 2 else "", "")]
    revised_cap = str(rng.randint(50, 50_000))
    return [(code, name, level, otc, prop, cap, restricted, "", REVISION_TO),
            (code, name, level, otc, prop, revised_cap, restricted, REVISION_FROM, "")]


def iter_generated_rows(seed: int, *, legacy: bool = True) -> Iterator[Fields]:
    """An endless stream of rows: LEGACY_ROWS first when `legacy`, then generated codes (about
    one in a hundred with two successive rows; every other code has one row)."""
    rng = random.Random(seed)
    codes: set[str] = set()
    if legacy:
        codes.update(row[0] for row in LEGACY_ROWS)
        yield from LEGACY_ROWS
    serial = 0
    while True:
        serial += 1
        generated = _generated(rng, serial)
        if generated[0][0] not in codes:
            codes.add(generated[0][0])
            yield from generated


def generated_rows(rows_count: int, seed: int, *, legacy: bool = True) -> list[Fields]:
    """The first `rows_count` rows of `iter_generated_rows`."""
    return list(itertools.islice(iter_generated_rows(seed, legacy=legacy), rows_count))


def small_rows() -> list[Fields]:
    """The `small` profile: LEGACY_ROWS and one row for each case the rules distinguish."""
    cases: list[Fields] = [
        ("XA01ABD075A002010100483", "阿莫西林胶囊 0.25g*24粒", "01", "0", "", "", "0", EDITION_FROM, ""),
        ("XN02BEA001A001010100125", "对乙酰氨基酚片 0.5g*12片", "01", "1", "", "1500", "0", EDITION_FROM, ""),
        ("XM01AEB010A004020100211", "布洛芬缓释片 0.3g*20片", "02", "1", "", "", "0", "", ""),
        ("XC10AAA025A001030100377", "阿托伐他汀钙片 20mg*7片", "02", "0", "300", "", "0", "", ""),
        ("XA10BAA017A001010100560", "二甲双胍片 0.5g*48片", "02", "0", "", "", "1", EDITION_FROM, ""),
        ("XJ01DBT021A002010100632", "头孢拉定胶囊 0.25g*24粒", "03", "0", "", "", "0", "", ""),
        ("ZA04BAJ0006010102475", "感冒清热颗粒*10袋", "01", "1", "", "2000", "0", "", ""),
        ("ZB02AAC0003020100981", "复方丹参滴丸*180丸", "02", "0", "", "", "1", "", ""),
        ("ZA06ABL0011030200314", "六味地黄丸*200丸", "03", "1", "", "", "0", "", ""),
        ("001102000010000", "普通门诊诊查费", "01", "0", "", "1000", "0", "", ""),
        ("001203000020000", "肌肉注射", "02", "0", "", "", "0", "", ""),
        ("004301000010000", "推拿", "03", "0", "", "", "1", "", ""),
        ("C01020201700100308700000001", "一次性使用无菌注射器 5ml", "02", "0", "", "150", "0", "", ""),
        ("XR05CBA003A007010100140", "氨溴索口服溶液 100ml", "02", "1", "", "", "0", *EXPIRED),
        ("XR06AXL020A001010100096", "氯雷他定片 10mg*6片", "01", "1", "", "", "0", FUTURE_FROM, ""),
        ("XB01ACA010A005010100218", "阿司匹林肠溶片 100mg*30片", "01", "1", "", "800", "0", "", REVISION_TO),
        ("XB01ACA010A005010100218", "阿司匹林肠溶片 100mg*30片", "01", "1", "", "600", "0", REVISION_FROM, ""),
    ]
    return list(LEGACY_ROWS) + cases


def catalogue_csv(rows: Iterable[Sequence[str]]) -> str:
    """The CSV text of `rows` under the catalogue's header (LF line ends, quoting where needed)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CATALOGUE_HEADER)
    writer.writerows(rows)
    return out.getvalue()
