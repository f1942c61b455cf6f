#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Golden sequences for tests/zero/test_loss_scaler.cpp.

A transcription of DeepSpeed's loss scalers (deepspeed/runtime/fp16/loss_scaler.py) exactly as
/work/shared/reference/deepspeed.md §2 quotes them -- written from that text, not from zerotrain's
C++ -- driven through scripted overflow/clean sequences. It writes loss_scaler_golden.txt next
to itself:

    python3 tests/zero/loss_scaler_reference.py

Format (one record per line):
    case <name>
    settings dynamic=<0|1> static_scale=<hex> init_scale=<hex> window=<n> min_scale=<hex>
             hysteresis=<n> consecutive=<0|1> raise=<0|1>          (one line)
    step <i> overflow <0|1> scale <hex> hysteresis <n|-> cur_iter <n|-> last_overflow_iter <n|->
    log <the rank-0 logger.info line, verbatim>
    raises <exception message>        (the update of the preceding overflow raised; case ends)
    end
Floats are written with float.hex() so they round-trip exactly; the state after each update is
the scaler's, "-" where the static scaler has no such field.
"""

import os


class DynamicLossScaler:
    """deepspeed.md §2: class defaults init 2**32, factor 2.0, window 1000, min 1,
    delayed_shift 1, consecutive_hysteresis False, raise_error_at_min_scale True."""

    def __init__(self, init_scale=2**32, scale_factor=2.0, scale_window=1000, min_scale=1,
                 delayed_shift=1, consecutive_hysteresis=False, raise_error_at_min_scale=True):
        self.cur_scale = init_scale
        self.cur_iter = 0
        self.last_overflow_iter = -1
        self.scale_factor = scale_factor
        self.scale_window = scale_window
        self.min_scale = min_scale
        self.delayed_shift = delayed_shift
        self.cur_hysteresis = delayed_shift
        self.consecutive_hysteresis = consecutive_hysteresis
        self.raise_error_at_min_scale = raise_error_at_min_scale
        self.dynamic = True
        self.log = []  # rank-0 logger.info lines (dtype fp16: the "Attempted..." suffix is on)

    def update_scale(self, overflow):
        if overflow:
            if self.delayed_shift == 1 or self.cur_hysteresis == 1:
                if self.cur_scale == self.min_scale and self.raise_error_at_min_scale:
                    raise Exception("Current loss scale already at minimum - cannot decrease "
                                    "scale anymore. Exiting run.")
                next_scale = max(self.cur_scale / self.scale_factor, self.min_scale)
                self.log.append(f"[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss "
                                f"scale: {int(self.cur_scale)}, reducing to {int(next_scale)}")
                self.cur_scale = next_scale
            else:
                self.log.append(f"[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss "
                                f"scale: {int(self.cur_scale)}, but hysteresis is "
                                f"{self.cur_hysteresis}. Reducing hysteresis to "
                                f"{self.cur_hysteresis - 1}")
                self.cur_hysteresis -= 1
            self.last_overflow_iter = self.cur_iter
        else:
            if self.consecutive_hysteresis:
                self.log.append(f"Consecutive hysteresis is enabled. Restoring hysteresis to "
                                f"{self.delayed_shift}")
                self.cur_hysteresis = self.delayed_shift
            if (self.cur_iter - self.last_overflow_iter) % self.scale_window == 0:
                if not self.consecutive_hysteresis:
                    self.cur_hysteresis = self.delayed_shift
                self.cur_scale *= self.scale_factor
        self.cur_iter += 1


class LossScaler:
    """Static: update_scale is a no-op."""

    def __init__(self, scale=1):
        self.cur_scale = scale
        self.dynamic = False
        self.log = []

    def update_scale(self, overflow):
        pass


def seq(*parts):
    """seq("0" * 7, "1", "00") -> [False]*7 + [True] + [False]*2."""
    return [c == "1" for c in "".join(parts)]


# (name, constructor kwargs or static scale, overflow sequence). Dynamic kwargs are what ZeRO
# passes (init_scale = 2**initial_scale_power, an int, as get_dynamic_loss_scale_args builds it).
CASES = [
    # Class defaults with a short window: first growth at iter window-1, then every window.
    ("growth_from_start", dict(init_scale=2**16, scale_window=8), seq("0" * 25)),
    # Hysteresis 1 (the ZeRO default): every overflow halves; the window restarts after it.
    ("hysteresis1_halving", dict(init_scale=2**16, scale_window=4),
     seq("0" * 3, "1", "0" * 4, "11", "0" * 9)),
    # Hysteresis 2 (DeepSpeed's fp16 key default): the first overflow only spends hysteresis,
    # a growth refills it.
    ("hysteresis2_window_refill", dict(init_scale=2**16, scale_window=3, delayed_shift=2),
     seq("1", "0", "1", "1", "1", "0" * 3, "1", "1", "0" * 7)),
    # Hysteresis 3, no refill in between: two decrements, then halving on every overflow.
    ("hysteresis3_spent", dict(init_scale=2**20, scale_window=100, delayed_shift=3),
     seq("1111", "0", "11", "0" * 5)),
    # Consecutive hysteresis: every clean step refills (and logs), growth still per window.
    ("consecutive_refills", dict(init_scale=2**16, scale_window=4, delayed_shift=2,
                                 consecutive_hysteresis=True),
     seq("1", "0", "1", "1", "0", "1", "0" * 5, "11", "0" * 3)),
    # Window 1: growth on every clean step, without a maximum; huge scales print exactly.
    ("window1_no_max", dict(init_scale=2**60, scale_window=1), seq("0" * 12, "1", "1", "0" * 2)),
    ("huge_scale_exact_int", dict(init_scale=2**1000, scale_window=1, delayed_shift=1),
     seq("0" * 5, "1", "0", "1")),
    # A non-power-of-two minimum: halving clamps to it, then the next overflow raises.
    ("min_scale_clamp_then_raise", dict(init_scale=2**4, scale_window=1000, min_scale=3),
     seq("1", "1", "1", "1", "0", "1")),
    # The minimum from the start, hysteresis 2: one overflow is absorbed, the second raises.
    ("raise_at_min_after_hysteresis", dict(init_scale=2**0, scale_window=1000, min_scale=1,
                                           delayed_shift=2),
     seq("0", "1", "1")),
    # raise_error_at_min_scale off: the scale stays at the minimum and logs each time.
    ("min_scale_no_raise", dict(init_scale=2**2, scale_window=5, min_scale=1,
                                raise_error_at_min_scale=False),
     seq("1111", "0" * 5, "1")),
    # The fp16 key defaults as a config writes them (power 16, window 1000, hysteresis 2, min 1).
    ("fp16_key_defaults", dict(init_scale=2**16, scale_window=1000, min_scale=1,
                               delayed_shift=2), seq("0" * 5, "1", "0", "1", "1", "1", "0" * 3)),
    # Static scalers: never change, overflows are only reported (and skipped by ZeRO).
    ("static_fp16_128", 128.0, seq("0", "1", "0", "1", "1", "0")),
    ("static_unit", 1.0, seq("1", "0", "1")),
]


def hexf(value):
    return float(value).hex()


def run_case(name, spec, overflows):
    out = [f"case {name}"]
    if isinstance(spec, dict):
        scaler = DynamicLossScaler(**spec)
        out.append(f"settings dynamic=1 static_scale={hexf(1.0)} "
                   f"init_scale={hexf(scaler.cur_scale)} window={scaler.scale_window} "
                   f"min_scale={hexf(scaler.min_scale)} hysteresis={scaler.delayed_shift} "
                   f"consecutive={int(scaler.consecutive_hysteresis)} "
                   f"raise={int(scaler.raise_error_at_min_scale)}")
    else:
        scaler = LossScaler(spec)
        out.append(f"settings dynamic=0 static_scale={hexf(spec)} init_scale={hexf(2**32)} "
                   f"window=1000 min_scale={hexf(1)} hysteresis=1 consecutive=0 raise=1")
    for i, overflow in enumerate(overflows):
        scaler.log = []
        try:
            scaler.update_scale(overflow)
        except Exception as error:  # noqa: BLE001 - DeepSpeed raises a bare Exception
            out.append(f"step {i} overflow {int(overflow)}")
            out.append(f"raises {error}")
            break
        if scaler.dynamic:
            state = (f"hysteresis {scaler.cur_hysteresis} cur_iter {scaler.cur_iter} "
                     f"last_overflow_iter {scaler.last_overflow_iter}")
        else:
            state = "hysteresis - cur_iter - last_overflow_iter -"
        out.append(f"step {i} overflow {int(overflow)} scale {hexf(scaler.cur_scale)} {state}")
        out.extend(f"log {line}" for line in scaler.log)
    out.append("end")
    return out


def main():
    lines = ["# Generated by tests/zero/loss_scaler_reference.py (DeepSpeed's loss scaler as",
             "# reference/deepspeed.md §2 quotes it). Do not edit; rerun the script."]
    for name, spec, overflows in CASES:
        lines.extend(run_case(name, spec, overflows))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loss_scaler_golden.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path}: {len(CASES)} cases")


if __name__ == "__main__":
    main()
