"""Everything the agent says, in English and Chinese; health texts are wellness advice, never a diagnosis."""

from __future__ import annotations

import math
import re

from schemas.display import ELLIPSIS, LINE_UNITS, char_units, clip_line, text_units, wrap

_T: dict[str, tuple[str, str]] = {
    # conversation
    "not_understood": ("Sorry, I didn't get that.", "抱歉，我没听懂。"),
    "gave_up": ("Sorry, I couldn't get that, so I stopped.", "没听明白，已取消。"),
    "cancelled": ("Cancelled.", "已取消。"),
    "undone": ("Undone.", "已撤销。"),
    "cancel.ride": ("Cancelling your ride.", "正在取消行程。"),
    "cancel.order": ("Cancelling your order.", "正在取消订单。"),
    "asked_expired": ("No answer, so I stopped.", "没有收到回答，已取消。"),
    "phone_offline": ("Your phone is offline, so I can't do that now.", "手机离线，暂时无法完成。"),
    "glasses_offline": ("Your glasses are offline.", "眼镜离线。"),
    "no_quote": ("The app didn't answer. Please try again.", "应用没有响应，请稍后再试。"),
    "confirm_button": ("Confirm", "确认"),
    "cancel_button": ("Cancel", "取消"),
    "dismiss_button": ("Dismiss", "忽略"),
    "book_button": ("Book", "叫车"),
    "say_yes": ("Say yes to confirm.", "说“确认”即可下单。"),
    # questions
    "ask.order_food.dish": ("What would you like to order?", "想点什么？"),
    "ask.order_food.address": ("Where should it go?", "送到哪里？"),
    "ask.hail_ride.destination": ("Where to?", "去哪里？"),
    "ask.navigate.destination": ("Where do you want to go?", "要去哪里？"),
    "ask.teleprompter.script": ("Which script?", "用哪份稿子？"),
    "ask.remind.text": ("What should I remind you about?", "提醒你什么？"),
    "ask.remind.when": ("When should I remind you?", "什么时候提醒你？"),
    "ask.translate.target_lang": ("Into which language?", "翻译成哪种语言？"),
    "ask.price_lookup.item": ("What should I look up?", "要查什么？"),
    "ask.title": ("Question", "提问"),
    "ask.place": ("Where is {place}? Say a place I know or an address.", "{place}在哪里？请说一个具体的地点或地址。"),
    "guess": ("Did you mean: {what}?", "你是想{what}吗？"),
    "guess.order_food": ("order food", "点外卖"),
    "guess.hail_ride": ("call a taxi", "打车"),
    "guess.navigate": ("get directions", "导航"),
    "guess.translate": ("translate", "翻译"),
    "guess.teleprompter": ("open the teleprompter", "打开提词器"),
    "guess.capture": ("take a photo or video", "拍照或录像"),
    "guess.remind": ("set a reminder", "设个提醒"),
    "guess.health_query": ("check your health data", "查看健康数据"),
    "guess.music": ("play music", "播放音乐"),
    "guess.meeting_notes": ("take meeting notes", "记录会议"),
    "guess.price_lookup": ("look up a price", "查价格"),
    # food
    "food.title": ("Order {dish}", "下单：{dish}"),
    "food.body": (
        "{restaurant}{qty}× {dish}\n{price} · about {eta} min\nTo {address}",
        "{restaurant}{dish} ×{qty}\n{price} · 约{eta}分钟\n送到{address}",
    ),
    "food.speech": (
        "Order {qty} {dish}{from_restaurant}, {price}, about {eta} minutes. Confirm?",
        "{from_restaurant}点{qty}份{dish}，共{price}，约{eta}分钟送达。确认吗？",
    ),
    "food.committed": ("Ordered. About {eta} min.", "已下单，约{eta}分钟送达。"),
    "food.expired": ("Not confirmed, so I didn't order.", "未确认，没有下单。"),
    "food.courier_near": ("Courier {m} min away", "骑手还有{m}分钟到达"),
    "food.delivered": ("Your order is here. Enjoy!", "外卖已送达。"),
    "food.cancelled": ("Your order was cancelled.", "订单已取消。"),
    "food.failed": ("Your order failed.", "下单失败。"),
    # ride
    "ride.title": ("Taxi to {dest}", "打车去{dest}"),
    "ride.body": ("{price} · pickup in {eta} min\n{product}", "{price} · {eta}分钟上车\n{product}"),
    "ride.speech": (
        "Taxi to {dest}, {price}, pickup in {eta} minutes. Confirm?",
        "打车去{dest}，约{price}，{eta}分钟上车。确认吗？",
    ),
    "ride.committed": ("Booked. Finding a driver.", "已叫车，正在派单。"),
    "ride.expired": ("Not confirmed, so I didn't book.", "未确认，没有叫车。"),
    "ride.accepted": ("{name} · {plate}", "{name} · {plate}"),
    "ride.accepted_body": ("{vehicle}, {eta} min away", "{vehicle}，{eta}分钟后到达"),
    "ride.accepted_speech": (
        "{name} is coming in {eta} minutes, plate {plate}.",
        "{name}{eta}分钟后到，车牌{plate}。",
    ),
    "ride.arriving": ("Your car is here", "车已到达"),
    "ride.arriving_speech": ("Your car is here: {plate}.", "车到了，车牌{plate}。"),
    "ride.completed": ("Trip completed. {price}", "行程结束。{price}"),
    "ride.driver_canceled": ("The driver cancelled. Finding another.", "司机取消了，正在重新派单。"),
    "ride.no_drivers": ("No driver available.", "暂无司机接单。"),
    "ride.rider_canceled": ("Your ride was cancelled.", "行程已取消。"),
    # other skills
    "nav.start": ("Directions to {dest}", "开始导航去{dest}"),
    "nav.unknown_place": ("I don't know where {dest} is.", "我不知道{dest}在哪里。"),
    "nav.speech": ("Starting {mode} directions to {dest}.", "开始{mode}导航去{dest}。"),
    "mode.walk": ("walking", "步行"),
    "mode.bike": ("cycling", "骑行"),
    "mode.drive": ("driving", "驾车"),
    "mode.transit": ("transit", "公交"),
    "translate.start": ("Translating into {language}.", "开始翻译成{language}。"),
    "translate.listening": ("Listening…", "正在聆听…"),
    "translate.photo": ("Hold still, reading the text.", "请保持不动，正在识别文字。"),
    "prompter.ready": ("Script {name}: page 1 of {n}.", "稿子“{name}”：第1页，共{n}页。"),
    "prompter.missing": ("I can't find that script.", "找不到这份稿子。"),
    "capture.photo": ("Photo.", "拍照。"),
    "capture.video": ("Recording {s} seconds.", "录像{s}秒。"),
    "remind.set": (
        "I'll remind you to {text} at {at}. Say undo to cancel.",
        "好的，{at}提醒你{text}。说“撤销”可取消。",
    ),
    "remind.card": ("⏰ {at} · {text}", "⏰ {at} · {text}"),
    "remind.undo": ("Say undo to cancel.", "说“撤销”可取消。"),
    "remind.due": ("Reminder: {text}", "提醒：{text}"),
    "remind.title": ("Reminder", "提醒"),
    "day.tomorrow": ("tomorrow", "明天"),
    "day.mon": ("Mon", "周一"),
    "day.tue": ("Tue", "周二"),
    "day.wed": ("Wed", "周三"),
    "day.thu": ("Thu", "周四"),
    "day.fri": ("Fri", "周五"),
    "day.sat": ("Sat", "周六"),
    "day.sun": ("Sun", "周日"),
    "music.play": ("Playing {query}. Say undo to stop.", "正在播放{query}。说“撤销”可停止。"),
    "music.any": ("music", "音乐"),
    "music.control": ("OK.", "好的。"),
    "notes.start": ("Taking notes for {title}.", "开始记录：{title}。"),
    "notes.default": ("this meeting", "本次会议"),
    "price.start": ("Looking up the price of {item}.", "正在查{item}的价格。"),
    # health answers
    "health.title": ("Health", "健康"),
    "health.hr": ("Your heart rate is {v} bpm.", "你的心率是每分钟{v}次。"),
    "health.spo2": ("Your blood oxygen is {v}%.", "你的血氧是{v}%。"),
    "health.hrv": ("Your HRV is {v} ms.", "你的心率变异性是{v}毫秒。"),
    "health.stress": ("Your stress level is {v} out of 100.", "你的压力值是{v}（满分100）。"),
    "health.temp": ("Your skin temperature is {v} °C.", "你的皮肤温度是{v}°C。"),
    "health.temp_dev": ("Your skin temperature is {v} °C from your usual.", "你的皮肤温度比平时{v}°C。"),
    "health.resp": ("You breathed {v} times a minute last night.", "你昨晚的呼吸频率是每分钟{v}次。"),
    "health.steps": ("{v} steps today.", "今天走了{v}步。"),
    "health.sleep": ("You slept {h} h {m} min, {d} min deep.", "你睡了{h}小时{m}分钟，深睡{d}分钟。"),
    "health.none": ("I don't have that reading yet.", "还没有这项数据。"),
    "health.measuring": ("Measuring. Keep still.", "正在测量，请保持不动。"),
    "health.no_new": ("No new reading.", "没有测到新读数。"),
    "health.age": ("That reading is {age} old.", "这是{age}前的读数。"),
    "health.no_reading": ("I couldn't get a reading. Try again when still.", "没有测到，请静止后再试。"),
    "health.ring_offline": ("Your ring is offline.", "戒指离线。"),
    # proactive rules
    "rule.hr_high.title": ("Heart rate", "心率"),
    "rule.hr_high": (
        "Your heart rate has stayed above {t} for 10 minutes while resting. Feeling OK? Take a slow breath.",
        "你静息时心率持续10分钟高于{t}。感觉还好吗？慢慢深呼吸。",
    ),
    "rule.hr_low.title": ("Heart rate", "心率"),
    "rule.hr_low": (
        "Your heart rate has stayed below {t} for 10 minutes. Feeling OK?",
        "你的心率持续10分钟低于{t}。感觉还好吗？",
    ),
    "rule.spo2_low.title": ("Blood oxygen", "血氧"),
    "rule.spo2_low": (
        "Blood oxygen read low twice. Re-measure when still; if it stays low, consider medical advice.",
        "血氧两次读数偏低。请静止后重新测量；如果仍然偏低，建议咨询医生。",
    ),
    "rule.night_rhr.title": ("Resting heart rate", "静息心率"),
    "rule.night_rhr": (
        "Your resting heart rate was up last night. Consider an easier day.",
        "昨晚静息心率偏高，今天可以安排轻松一些。",
    ),
    "rule.skin_temp.title": ("Temperature", "体温"),
    "rule.skin_temp": (
        "Your temperature is above your usual. Rest and hydrate.",
        "你的体温比平时高，注意休息、多喝水。",
    ),
    "rule.glasses_battery.title": ("Glasses battery", "眼镜电量"),
    "rule.glasses_battery": ("Swap the {side} battery: {pct}% left.", "请更换{side}侧电池，剩余{pct}%。"),
    "side.left": ("left", "左"),
    "side.right": ("right", "右"),
    "rule.leave_now.title": ("Time to leave", "该出发了"),
    "rule.leave_now": (
        "Leave now for {title}: about {m} min to get there.",
        "该出发去{title}了，路上约{m}分钟。",
    ),
}


def lang_of(lang: str | None) -> str:
    """``zh`` for any Chinese tag, else ``en``."""
    return "zh" if lang and lang.lower().startswith("zh") else "en"


def say(key: str, lang: str, **values: object) -> str:
    """The text of ``key`` in ``lang`` (``en`` or ``zh``) with ``values`` filled in."""
    en, zh = _T[key]
    template = zh if lang_of(lang) == "zh" else en
    return template.format(**values) if values else template


_EN_PRONOUNS = {
    "i": "you", "me": "you", "my": "your", "mine": "yours", "myself": "yourself", "i'm": "you're",
    "i've": "you've", "i'll": "you'll", "i'd": "you'd", "am": "are", "our": "your", "us": "you",
    "ours": "yours", "ourselves": "yourselves", "we": "you",
}  # fmt: skip
_EN_PRONOUN = re.compile(r"(?<![\w'])(?:i'm|i've|i'll|i'd|myself|ourselves|mine|ours|my|me|our|us|we|i|am)(?![\w'])",
                         re.IGNORECASE)  # fmt: skip
_ZH_PRONOUN = re.compile("我们|咱们|我")


def to_listener(text: str, lang: str) -> str:
    """What the user said about themselves, as said back to them: "take my pills" -> "take your pills",
    "给我妈打电话" -> "给你妈打电话"."""
    if lang_of(lang) == "zh":
        return _ZH_PRONOUN.sub(lambda m: "你们" if len(m.group()) > 1 else "你", text)
    return _EN_PRONOUN.sub(lambda m: _EN_PRONOUNS[m.group().lower()], text)


def line_with_head(head: str, text: str, units: int = LINE_UNITS) -> tuple[str, bool]:
    """``head`` then as much of ``text`` as one display line holds: the head (a time, a price) is never cut.

    Returns the line and whether ``text`` was cut.
    """
    line = f"{head}{text}"
    if text_units(line) <= units:
        return line, False
    return clip_units(line, units), True


def minutes(seconds: float | None) -> int:
    """Whole minutes, rounded up (an ETA of 61 s is "2 min"), at least 1."""
    if seconds is None:
        return 0
    return max(1, math.ceil(seconds / 60))


def money(amount: float | None, currency: str = "CNY") -> str:
    """A price as people write it: ``¥32``, ``¥32.50``, ``$8``."""
    if amount is None:
        return "?"
    text = f"{amount:.0f}" if float(amount).is_integer() else f"{amount:.2f}"
    symbol = {"CNY": "¥", "USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}.get(currency)
    return f"{symbol}{text}" if symbol else f"{text} {currency}"


def clip(text: str, max_chars: int) -> str:
    """At most ``max_chars`` characters, with an ellipsis if cut."""
    text = text.strip()
    if len(text) <= max_chars:
        return text
    return text[: max(0, max_chars - 1)].rstrip() + ELLIPSIS


#: One display line, clipped (the one definition is :func:`schemas.display.clip_line`).
clip_units = clip_line


def fit_lines(text: str, lines: int) -> str:
    """Text that wraps to at most ``lines`` display lines; the last kept line ends with an ellipsis if cut."""
    wrapped = [line for line in wrap(text) if line.strip()]
    if len(wrapped) <= lines:
        return "\n".join(wrapped)
    kept = wrapped[:lines]
    last = clip_units(kept[-1], LINE_UNITS - char_units(ELLIPSIS))
    kept[-1] = last if last.endswith(ELLIPSIS) else last + ELLIPSIS
    return "\n".join(kept)
