"""Notes de-identification: recall, precision and speed on labelled synthetic notes.

Generates cardiology notes from templates whose slots are filled with identifiers of the
HIPAA Safe Harbor categories in many forms (names in any case, with hyphens, apostrophes and
diacritics, relatives and clinicians, MRNs whole, separated and as fragments, dates with and
without a year, ages over 89, street addresses, ZIP codes, US and international phones,
e-mail, URLs, IPs, account and device numbers), each labelled with its span, beside clinical
content (EF, intervals, lab values with units) that must survive. Each scrubber runs on the
same notes:

- ``rules``: the first, rule-based scrubber (``pipelines.tabular.notes_rules``), given the
  patient index's name and MRN as the pipeline gave it;
- ``philter``: philter-lite alone (its regexes and name lists; no patient index);
- ``chosen``: what silver uses (``pipelines.tabular.notes``): philter-lite + the patient
  index (names, MRN, birth date) + Safe Harbor rules.

Scores (word tokens aligned with difflib between the note and its scrubbed text): token
recall and precision of what was removed, entity recall (an identifier counts only when none
of its tokens survives), per-category entity recall, the share of clinical tokens kept, the
independent verifier's flag rate, and notes per second.

    python benchmarks/deid.py [--notes 400] [--seed 7] [--out benchmarks/results/deid.json]

The smoke test's tiny run: ``--notes 20 --out <tmp>/x.json``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import platform
import re
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.tabular import notes as chosen
from pipelines.tabular import notes_rules
from pipelines.tabular.deid_verify import verify_note

ROOT = Path(__file__).resolve().parents[1]
FIRST = ["Anna", "María-José", "Li", "Oluwaseun", "Zoë", "Jean-Luc", "Siobhán", "Mohammed",
         "Ingrid", "Raj", "Dmitri", "Ana", "Chloé", "Björn", "Aisha", "Tomás"]  # fmt: skip
LAST = ["Novak", "O'Brien", "García-Lorca", "Nguyen", "Müller", "D'Angelo", "Okafor", "Smith",
        "Kowalczyk", "Haddad", "van der Berg", "Ólafsdóttir", "Fitzgerald", "Ito"]  # fmt: skip
STREETS = ["Oak Street", "Maple Avenue", "Harbor Road", "Elm Drive", "Station Lane", "Kingsway"]
CITIES = ["Springfield", "Riverton", "Lakeside", "Fairview", "Brookfield"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]  # fmt: skip
CLINICAL = [
    "EF {ef}%", "QTc {qtc} ms", "QRS {qrs} ms", "K {k} mmol/L", "NT-proBNP {bnp} pg/mL",
    "heart rate {hr} bpm", "BP {sys}/{dia} mmHg", "sinus rhythm", "atrial fibrillation",
    "LBBB", "moderate mitral regurgitation", "LV hypertrophy", "troponin {trop} ng/L",
]  # fmt: skip


def _name_form(rng: np.random.Generator, first: str, last: str) -> str:
    forms = [f"{first} {last}", f"{last}, {first}", f"{first.lower()} {last.lower()}",
             f"{last.upper()}", f"{first[0]}. {last}", last, f"{first}"]  # fmt: skip
    return forms[int(rng.integers(len(forms)))]


def _date_form(rng: np.random.Generator, y: int, m: int, d: int) -> str:
    forms = [f"{m:02d}/{d:02d}/{y}", f"{y}-{m:02d}-{d:02d}", f"{d}.{m}.{y}",
             f"{MONTHS[m - 1]} {d}, {y}", f"{d} {MONTHS[m - 1][:3]} {y}", f"{m}/{d}",
             f"{MONTHS[m - 1]} {d}", f"{d} {MONTHS[m - 1]}"]  # fmt: skip
    return forms[int(rng.integers(len(forms)))]


def make_note(rng: np.random.Generator) -> dict[str, Any]:
    """One labelled note: text, identifier spans with categories, and the patient index."""
    first, last = FIRST[int(rng.integers(len(FIRST)))], LAST[int(rng.integers(len(LAST)))]
    mrn = f"{int(rng.integers(10**7, 10**8)):08d}"
    by, bm, bd = int(rng.integers(1925, 2000)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    vy, vm, vd = 2024, int(rng.integers(1, 13)), int(rng.integers(1, 29))
    rel = (FIRST[int(rng.integers(len(FIRST)))], LAST[int(rng.integers(len(LAST)))])
    doc = (FIRST[int(rng.integers(len(FIRST)))], LAST[int(rng.integers(len(LAST)))])
    values = {"ef": int(rng.integers(20, 70)), "qtc": int(rng.integers(380, 520)),
              "qrs": int(rng.integers(80, 160)), "k": round(float(rng.uniform(3.2, 6.1)), 1),
              "bnp": int(rng.integers(50, 4000)), "hr": int(rng.integers(45, 140)),
              "sys": int(rng.integers(95, 180)), "dia": int(rng.integers(55, 100)),
              "trop": int(rng.integers(3, 300))}  # fmt: skip
    slots: list[tuple[str, str | None]] = [
        ("Patient ", None), (_name_form(rng, first, last), "name"), (" (MRN ", None),
        (rng.choice([mrn, f"{mrn[:4]}-{mrn[4:]}", mrn.lstrip("0")]), "mrn"), (", DOB ", None),
        (_date_form(rng, by, bm, bd), "date"), (") seen on ", None),
        (_date_form(rng, vy, vm, vd), "date"), (". ", None),
    ]  # fmt: skip
    extras: list[list[tuple[str, str | None]]] = [
        [("Seen with Dr. ", None), (f"{doc[0]} {doc[1]}", "name"), (". ", None)],
        [("Discussed with dr ", None), (doc[1].lower(), "name"), (". ", None)],
        [("Wife ", None), (f"{rel[0]} {rel[1]}", "name"), (" present. ", None)],
        [("Daughter ", None), (rel[0].lower(), "name"), (" will call back. ", None)],
        [
            ("Call back at ", None),
            (f"555-{int(rng.integers(100, 999))}-{int(rng.integers(1000, 9999))}", "phone"),
            (". ", None),
        ],  # noqa: E501
        [
            ("Reachable on ", None),
            (f"+44 20 {int(rng.integers(1000, 9999))} {int(rng.integers(1000, 9999))}", "phone"),
            (". ", None),
        ],  # noqa: E501
        [
            ("Email ", None),
            (f"{first.lower()[:3]}.{int(rng.integers(10, 99))}@mail.example.com", "email"),
            (". ", None),
        ],  # noqa: E501
        [
            ("Portal ", None),
            (f"https://portal.example.org/p/{int(rng.integers(10**4, 10**5))}", "url"),
            (". ", None),
        ],  # noqa: E501
        [
            ("Upload from ", None),
            (
                f"10.{int(rng.integers(0, 255))}.{int(rng.integers(0, 255))}.{int(rng.integers(1, 255))}",
                "ip",
            ),
            (". ", None),
        ],  # noqa: E501
        [
            ("Lives at ", None),
            (f"{int(rng.integers(1, 9999))} {STREETS[int(rng.integers(len(STREETS)))]}", "address"),
            (", ", None),
            (CITIES[int(rng.integers(len(CITIES)))], "address"),
            (", IL ", None),
            (f"{int(rng.integers(10000, 99999))}", "zip"),
            (". ", None),
        ],  # noqa: E501
        [("Age ", None), (f"{int(rng.integers(90, 104))}", "age"), (". ", None)],
        [
            ("A ", None),
            (f"{int(rng.integers(90, 104))}-year-old", "age"),
            (" with dyspnoea. ", None),
        ],  # noqa: E501
        [
            ("Account ", None),
            (
                f"{int(rng.integers(1000, 9999))}-{int(rng.integers(1000, 9999))}-{int(rng.integers(100, 999))}",
                "account",
            ),
            (". ", None),
        ],  # noqa: E501
        [
            ("Device serial ", None),
            (f"PM{int(rng.integers(10, 99))}-{int(rng.integers(1000, 9999))}X", "device"),
            (". ", None),
        ],  # noqa: E501
        [("Chart ref ", None), (mrn[-4:], "mrn"), ("-ext. ", None)],
        [
            ("Follow-up on ", None),
            (f"{MONTHS[int(rng.integers(12))]} {int(rng.integers(1, 28))}", "date"),
            (". ", None),
        ],  # noqa: E501
    ]
    for k in rng.choice(len(extras), size=5, replace=False):
        slots += extras[int(k)]
    clinical = ", ".join(CLINICAL[int(i)].format(**values)
                         for i in rng.choice(len(CLINICAL), size=5, replace=False))  # fmt: skip
    slots += [(f"Findings: {clinical}.", None)]
    text, spans = "", []
    for piece, category in slots:
        if category:
            spans.append((len(text), len(text) + len(piece), category))
        text += piece
    return {
        "text": text,
        "spans": spans,
        "names": [f"{last}^{first}"],
        "mrns": [mrn],
        "births": [f"{by:04d}-{bm:02d}-{bd:02d}"],
    }


def _tokens(text: str) -> list[tuple[str, int, int]]:
    return [(m.group(0).lower(), m.start(), m.end()) for m in re.finditer(r"\w+", text)]


def score(notes: list[dict[str, Any]], outputs: list[str]) -> dict[str, Any]:
    """Token recall/precision of removal, entity recall (overall and per category), kept text."""
    tp = fp = fn = kept_clinical = clinical = 0
    entities: dict[str, list[int]] = {}
    for note, out in zip(notes, outputs, strict=True):
        src = _tokens(note["text"])
        dst = [t for t, _, _ in _tokens(re.sub(r"\[[A-Z]+\]", " ", out))]
        matcher = difflib.SequenceMatcher(a=[t for t, _, _ in src], b=dst, autojunk=False)
        survived = [False] * len(src)
        for block in matcher.get_matching_blocks():
            for i in range(block.a, block.a + block.size):
                survived[i] = True
        phi = [any(a <= s < b for a, b, _ in note["spans"]) for _, s, _ in src]
        for is_phi, alive in zip(phi, survived, strict=True):
            tp += is_phi and not alive
            fn += is_phi and alive
            fp += (not is_phi) and not alive
            clinical += not is_phi
            kept_clinical += (not is_phi) and alive
        for a, b, category in note["spans"]:
            idx = [i for i, (_, s, _) in enumerate(src) if a <= s < b]
            caught = int(all(not survived[i] for i in idx))
            entities.setdefault(category, []).append(caught)
    all_caught = [c for v in entities.values() for c in v]
    return {
        "token_recall": tp / max(1, tp + fn),
        "token_precision": tp / max(1, tp + fp),
        "entity_recall": sum(all_caught) / max(1, len(all_caught)),
        "entity_recall_by_category": {k: sum(v) / len(v) for k, v in sorted(entities.items())},
        "non_phi_tokens_kept": kept_clinical / max(1, clinical),
    }


def scrubbers() -> dict[str, Callable[[dict[str, Any]], str]]:
    """The scrubbers compared, each a function of one labelled note."""
    return {
        "rules": lambda n: notes_rules.deidentify_note(
            n["text"], known_names=n["names"], known_mrns=n["mrns"]
        ),
        "philter": lambda n: chosen._merge(n["text"], chosen.philter_spans(n["text"])),
        "chosen": lambda n: chosen.deidentify_note(
            n["text"], known_names=n["names"], known_mrns=n["mrns"], known_birth_dates=n["births"]
        ),
    }


def main() -> None:
    """Run every scrubber on the same notes, print a table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notes", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "deid.json")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    notes = [make_note(rng) for _ in range(args.notes)]
    chosen.philter_spans("warm-up")  # load philter's filters once, outside the timing
    results = []
    for name, run in scrubbers().items():
        start = time.perf_counter()
        outputs = [run(n) for n in notes]
        elapsed = time.perf_counter() - start
        row: dict[str, Any] = {"scrubber": name, **score(notes, outputs)}
        row["notes_per_s"] = len(notes) / elapsed
        row["verifier_flags"] = sum(
            bool(verify_note(o, known_names=n["names"], known_mrns=n["mrns"],
                             known_birth_dates=n["births"]))
            for n, o in zip(notes, outputs, strict=True)
        ) / len(notes)  # fmt: skip
        row["example"] = outputs[0]
        results.append(row)
    header = f"{'scrubber':<9} {'tok recall':>10} {'tok prec':>9} {'ent recall':>10} "
    header += f"{'non-PHI kept':>12} {'verifier':>8} {'notes/s':>8}"
    print(f"{len(notes)} labelled synthetic notes (seed {args.seed})\n{header}")
    for r in results:
        print(
            f"{r['scrubber']:<9} {r['token_recall']:>10.3f} {r['token_precision']:>9.3f} "
            f"{r['entity_recall']:>10.3f} {r['non_phi_tokens_kept']:>12.3f} "
            f"{r['verifier_flags']:>8.3f} {r['notes_per_s']:>8.0f}"
        )
    categories = sorted(results[0]["entity_recall_by_category"])
    print("\nentity recall by category\n" + f"{'category':<9} " + " ".join(
        f"{r['scrubber']:>8}" for r in results))  # fmt: skip
    for c in categories:
        print(f"{c:<9} " + " ".join(f"{r['entity_recall_by_category'][c]:>8.3f}" for r in results))
    report = {
        "benchmark": "deid",
        "notes": len(notes),
        "seed": args.seed,
        "philter_lite": version("philter-lite"),
        "python": platform.python_version(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
