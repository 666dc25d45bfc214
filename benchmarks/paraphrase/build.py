"""Builds and checks benchmarks/paraphrase/cases.jsonl: questions that share no content word with their answer.

    .venv/bin/python benchmarks/paraphrase/build.py          # writes cases.jsonl, fails on a case that breaks a rule

Each case names its document (the example article, or a passage of ../shared/eval/multihop_hotpot_musique), an
excerpt of the sentence that answers it and gold answers (verbatim in that excerpt). The whole sentence holding the
excerpt (as qa's evidence step splits sentences, `qa.evidence.sentence_spans`) is written to the case, and the
question must share no content word with it, by qa's own test (`qa.attribution.words_in`: lower-cased, stop words
dropped, Snowball-stemmed), so BM25 has nothing in that sentence to match. Written by hand for this benchmark;
split alternately into dev and test in the order below.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from qa.attribution import words_in  # noqa: E402
from qa.evidence import sentence_spans  # noqa: E402

ARTICLE = ROOT / "examples" / "nk_soldiers_kursk.txt"
MULTIHOP = ROOT.parent / "shared" / "eval" / "multihop_hotpot_musique" / "docs"

# (document, question, sentence that answers it, gold answers)
CASES: list[tuple[str, str, str, list[str]]] = [
    ("nk_soldiers_kursk", "How many casualties did Kyiv's leader claim?",
     "On Thursday, Zelenskyy put the number of killed or wounded North Koreans at 4,000", ["4,000"]),
    ("nk_soldiers_kursk", "What figure did Washington give for the losses?",
     "though U.S. estimates are lower, at around 1,200.", ["1,200", "around 1,200"]),
    ("nk_soldiers_kursk", "Which place was listed on a captive's identification?",
     "the other had been carrying a Russian military ID card in the name of a man from Tuva", ["Tuva"]),
    ("nk_soldiers_kursk", "What broken bone did a prisoner have?",
     "the other soldier had an open wound and a lower leg fracture", ["lower leg fracture", "leg fracture"]),
    ("nk_soldiers_kursk", "On what date were the pair taken prisoner?",
     "captured two North Korean soldiers on January 9 in the Kursk battlefield", ["January 9"]),
    ("nk_soldiers_kursk", "How large a contingent did the DPRK dispatch?",
     "Pyongyang has sent 10,000 – 12,000 troops", ["10,000 – 12,000", "12,000", "10,000"]),
    ("nk_soldiers_kursk", "In which month did combat with them get verified?",
     "Ukrainian troops only confirmed engagement on the ground in December.", ["December"]),
    ("nk_soldiers_kursk", "When did word of the deployment initially surface?",
     "While reports of their presence first emerged in October", ["October"]),
    ("nk_soldiers_kursk", "Which platform did the president use to publicise the seizure of the Asian fighters?",
     "Zelenskyy said in a post on the Telegram messaging app", ["Telegram"]),
    ("nk_soldiers_kursk", "To which city did Ukraine move the detainees?",
     "the two captured North Korean soldiers were wounded and taken to Kyiv", ["Kyiv"]),
    ("nk_soldiers_kursk", "Who speaks for Kyiv's spy service?",
     "Andrii Yusov, spokesperson for Ukraine’s military intelligence agency", ["Andrii Yusov", "Yusov"]),
    ("nk_soldiers_kursk", "Where were the captives filmed lying?",
     "SBU released video that appears to show the two prisoners on beds inside jail cells.",
     ["on beds inside jail cells", "jail cells"]),
    ("nk_soldiers_kursk", "Which news wire did the spy bureau brief?",
     "Seoul's National Intelligence Service (NIS) told AFP", ["AFP"]),
    ("hotpot_p0009", "Which body parts does this ghost of Babylonian myth lack?",
     "The demon has no mouth, lips or ears.", ["mouth, lips or ears", "no mouth, lips or ears"]),
    ("hotpot_p0009", "What happens to someone this Mesopotamian ghost takes over?",
     "possession by Alû results in unconsciousness and coma", ["unconsciousness and coma"]),
    ("hotpot_p0100", "Who headed the coalition that triumphed in the Bengal vote of 1967?",
     "United Front led by Ajoy Mukherjee won majority of seats in the election", ["Ajoy Mukherjee"]),
    ("hotpot_p0400", "Which Caribbean country staged CONCACAF's junior soccer tournament of the late 2000s?",
     "The 2009 edition was held in Trinidad and Tobago.", ["Trinidad and Tobago"]),
    ("hotpot_p0800", "Which leader does the Taipei ward home to most ministries honour?",
     "This district is named after Generalissimo and the late President of the Republic of China Chiang Kai-shek.",
     ["Chiang Kai-shek"]),
    ("musique_p1500", "Which administrative area does the Dakota stream mostly cross?",
     "It flows for almost its entire length in Grand Forks County.", ["Grand Forks County"]),
    ("musique_p1800", "When did the English oval-ball code's honour roll begin?",
     "It was established by the sport's governing body in the UK, the Rugby Football League, in 1988.", ["1988"]),
    ("musique_p1800", "How long after stopping can a veteran enter that honour roll?",
     "Players must have been retired for at least five years to be eligible", ["five years", "at least five years"]),
    ("hotpot_p0150", "What record did the F.I.R. frontwoman put out by herself?",
     'In 2017, Faye made her solo debut with the album "Little Outerspace".', ["Little Outerspace"]),
    ("hotpot_p0150", "Which prize did Chan Wen-ting's group take home as newcomers?",
     "She is the lead vocalist of pop rock band F.I.R., who won Golden Melody Award for Best New Artist in 2005.",
     ["Golden Melody Award for Best New Artist", "Golden Melody Award"]),
    ("hotpot_p0600", "Who taught the six-string player of that Californian rock group?",
     "He was a student of guitarist Joe Satriani.", ["Joe Satriani"]),
    ("hotpot_p0600", "In which Californian city was David Bryson's group started?",
     "He formed Counting Crows with Duritz in San Francisco in 1991.", ["San Francisco"]),
]


def text_of(document: str) -> str:
    path = ARTICLE if document == "nk_soldiers_kursk" else MULTIHOP / f"{document}.txt"
    return path.read_text(encoding="utf-8")


def main() -> None:
    problems: list[str] = []
    lines: list[str] = []
    for n, (document, question, sentence, answers) in enumerate(CASES):
        text = text_of(document)
        at = text.find(sentence)
        if at < 0:
            problems.append(f"{n}: excerpt not in {document}: {sentence!r}")
            continue
        spans = [(a, b) for a, b in sentence_spans(text, 0, len(text)) if a < at + len(sentence) and b > at]
        sentence_excerpt, sentence = sentence, text[spans[0][0] : spans[-1][1]].strip()
        if not any(a in sentence_excerpt for a in answers):
            problems.append(f"{n}: no gold answer in its sentence: {answers}")
        shared = words_in(question) & words_in(sentence)
        if shared:
            problems.append(f"{n}: {question!r} shares {sorted(shared)} with its sentence")
        lines.append(json.dumps({
            "id": f"para-{n:02d}", "doc_id": document, "question": question, "answers": answers,
            "sentence": sentence, "split": "dev" if n % 2 == 0 else "test",
        }, ensure_ascii=False))
    if problems:
        raise SystemExit("\n".join(problems))
    (Path(__file__).parent / "cases.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} cases, none sharing a content word with its answer sentence")


if __name__ == "__main__":
    main()
