#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Expected values for tests/optim, computed in double precision from the formulas of
DeepSpeed's CPUAdam/FusedAdam, FusedLamb, lr_schedules.py (0.16.5) and ZeRO's gradient
clipping, written out independently of the C++ code. Output: reference_values.txt (kept beside,
pasted into the tests). Run: python3 tests/optim/reference_values.py > tests/optim/reference_values.txt
"""
import math

PARAMS = [0.5, -1.0, 2.0, 0.0]
GRADS = [[0.1, -0.2, 0.3, 0.05], [0.05, 0.1, -0.4, 0.0], [-0.3, 0.2, 0.1, 1.0]]


def adam(adam_w_mode, bias_correction, lr=0.01, b1=0.9, b2=0.999, eps=1e-8, wd=0.1):
    p, m, v = list(PARAMS), [0.0] * 4, [0.0] * 4
    for t, g_step in enumerate(GRADS, start=1):
        bc1 = 1 - b1 ** t if bias_correction else 1.0
        bc2 = 1 - b2 ** t if bias_correction else 1.0
        for i in range(4):
            g = g_step[i]
            if wd > 0 and not adam_w_mode:
                g = g + wd * p[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            denom = math.sqrt(v[i]) / math.sqrt(bc2) + eps
            if wd > 0 and adam_w_mode:
                p[i] -= lr * wd * p[i]
            p[i] -= lr / bc1 * (m[i] / denom)
    return p, m, v


def lamb(tensors, grads_per_step, lr=0.01, b1=0.9, b2=0.999, eps=1e-8, wd=0.01,
         max_coeff=10.0, min_coeff=0.01, eps_inside_sqrt=False, bias_correction=True):
    """tensors: list of lists (weights of each tensor); grads_per_step[step][tensor][elem]."""
    ps = [list(t) for t in tensors]
    ms = [[0.0] * len(t) for t in tensors]
    vs = [[0.0] * len(t) for t in tensors]
    ratios = []
    for t, grads in enumerate(grads_per_step, start=1):
        step_size = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) if bias_correction else lr
        step_ratios = []
        for p, m, v, g in zip(ps, ms, vs, grads):
            updates = []
            for i in range(len(p)):
                m[i] = b1 * m[i] + (1 - b1) * g[i]
                v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
                denom = math.sqrt(v[i] + eps) if eps_inside_sqrt else math.sqrt(v[i]) + eps
                updates.append(m[i] / denom + wd * p[i])
            w_norm = math.sqrt(sum(x * x for x in p))
            u_norm = math.sqrt(sum(x * x for x in updates))
            ratio = 1.0
            if w_norm != 0 and u_norm != 0:
                ratio = min(max(w_norm / u_norm, min_coeff), max_coeff)
            step_ratios.append(ratio)
            for i in range(len(p)):
                p[i] -= step_size * ratio * updates[i]
        ratios.append(step_ratios)
    return ps, ratios


def warmup_gamma(t, n, kind):
    n = max(2, n)
    return math.log(t + 1) / math.log(n) if kind == "log" else t / n


def warmup_lr(t, lo, hi, n, kind):
    if t < 0:
        return lo
    g = warmup_gamma(t, n, kind) if t < max(2, n) else 1.0
    return lo + (hi - lo) * g


def warmup_decay_lr(t, total, lo, hi, n, kind):
    if t < 0:
        return lo
    N = max(2, n)
    if t < N:
        g = warmup_gamma(t, n, kind)
    else:
        g = max(0.0, (total - t) / max(1.0, total - N))
    return lo + (hi - lo) * g


def warmup_cosine_lr(t, base, total, min_ratio, n, cos_min, kind):
    if t < 0:
        return 0.0
    N = max(2, n)
    if t < N:
        r = warmup_gamma(t, n, kind)
        return base * (min_ratio + r * (1 - min_ratio))
    s, T = t - N + 1, total - N
    return base * max(0.0, cos_min + (1 - cos_min) * (1 + math.cos(math.pi * s / T)) / 2)


def one_cycle(t, lo, hi, first, second, decay_lr_rate, decay_step, min_mom, max_mom, decay_mom):
    total = first + second
    ratio = first / total
    if t < 0:
        return lo, min_mom
    if t < total:
        b = t + 1
        cycle = math.floor(1 + b / total)
        x = 1 + b / total - cycle
        scale = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        return lo + (hi - lo) * scale, max_mom - (max_mom - min_mom) * scale
    d = t - total + 1
    lr = lo if (decay_step == 0 or decay_lr_rate == 0) else lo / (1 + decay_lr_rate * d / decay_step)
    mom = max_mom if (decay_step == 0 or decay_mom == 0) else max_mom * (1 + decay_mom * d / decay_step)
    return lr, mom


def lr_range_test(t, lo, size, rate, staircase):
    interval = (t + 1) / size
    if staircase:
        interval = math.floor(interval)
    return lo * (1 + rate * interval)


def clip_coefficient(norm, max_norm):
    if max_norm <= 0:
        return 1.0
    clip = (norm + 1e-6) / max_norm
    return 1 / clip if clip > 1 else 1.0


def fmt(values):
    return "{" + ", ".join(repr(float(x)) for x in values) + "}"


def main():
    for name, args in [("adamw", (True, True)), ("adam_l2", (False, True)),
                       ("adamw_no_bias_correction", (True, False))]:
        p, m, v = adam(*args)
        print(f"{name}: params={fmt(p)} exp_avg={fmt(m)} exp_avg_sq={fmt(v)}")

    tensors = [[0.5, -1.0, 2.0], [0.1, 0.2]]
    grads = [[[0.1, -0.2, 0.3], [0.05, -0.05]], [[0.05, 0.1, -0.4], [0.2, 0.1]]]
    p, r = lamb(tensors, grads)
    print(f"lamb: params={fmt(p[0] + p[1])} ratios={r}")
    p, r = lamb(tensors, grads, eps_inside_sqrt=True, bias_correction=False)
    print(f"lamb_eps_inside_no_bc: params={fmt(p[0] + p[1])} ratios={r}")
    # Clamps: big weights -> ratio above max_coeff; tiny weights -> below min_coeff; zero -> 1.
    p, r = lamb([[100.0, -200.0], [1e-4, 1e-4], [0.0, 0.0]],
                [[[0.1, 0.1], [0.1, -0.1], [0.3, 0.4]]], wd=0.0)
    print(f"lamb_clamps: params={fmt(p[0] + p[1] + p[2])} ratios={r}")

    ts = [-1, 0, 1, 5, 9, 10, 11, 50]
    print("warmup_lr_log:", fmt(warmup_lr(t, 0.001, 0.01, 10, "log") for t in ts))
    print("warmup_lr_linear:", fmt(warmup_lr(t, 0.001, 0.01, 10, "linear") for t in ts))
    ts_decay = [-1, 0, 5, 9, 10, 11, 15, 19, 20, 25]
    print("warmup_decay_lr:", fmt(warmup_decay_lr(t, 20, 0.0, 0.01, 10, "linear") for t in ts_decay))
    ts_cos = [-1, 0, 1, 9, 10, 11, 15, 19, 20, 25]
    print("warmup_cosine_lr:", fmt(warmup_cosine_lr(t, 0.1, 20, 0.1, 10, 0.01, "log") for t in ts_cos))
    ts_oc = [-1, 0, 1, 3, 4, 5, 8, 9, 10, 11, 13]
    oc = [one_cycle(t, 0.001, 0.01, 4, 6, 0.5, 2, 0.85, 0.95, 0.1) for t in ts_oc]
    print("one_cycle_lr:", fmt(x[0] for x in oc))
    print("one_cycle_beta1:", fmt(x[1] for x in oc))
    ts_rt = [-1, 0, 1, 2, 3, 7]
    print("lr_range_test:", fmt(lr_range_test(t, 0.001, 4, 0.5, False) for t in ts_rt))
    print("lr_range_test_staircase:", fmt(lr_range_test(t, 0.001, 4, 0.5, True) for t in ts_rt))
    print("clip:", fmt(clip_coefficient(n, 1.0) for n in [0.5, 1.0, 2.0, 10.0, -1.0]))


if __name__ == "__main__":
    main()
