// SPDX-License-Identifier: Apache-2.0
#include "io/synthetic_markov.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "io/random.hpp"

namespace zt::io {
namespace {

// Beyond this many contexts the tables stop being "small data" (16M contexts x branching).
constexpr std::int64_t kMaxContexts = std::int64_t{1} << 24;
constexpr double kStationaryTolerance = 1e-12;
constexpr int kMaxStationaryIterations = 1'000'000;

// Distinct streams of one seed: the chain's structure and the token stream never share draws,
// so changing num_tokens leaves the chain (and its entropy) unchanged.
constexpr std::uint64_t kStructureStream = 0x5EED'C4A1'0000'0001ULL;
constexpr std::uint64_t kTokenStream = 0x5EED'C4A1'0000'0002ULL;

std::int64_t checked_power(int base, int exponent) {
  std::int64_t result = 1;
  for (int i = 0; i < exponent; ++i) {
    result *= base;
    if (result > kMaxContexts)
      throw std::invalid_argument(
          "synthetic Markov chain: vocab_size^order = " + std::to_string(base) + "^" +
          std::to_string(exponent) + " contexts is more than the supported " +
          std::to_string(kMaxContexts));
  }
  return result;
}

void check_shape(int vocab_size, int order) {
  if (vocab_size < 1)
    throw std::invalid_argument("synthetic Markov chain: vocab_size must be >= 1, got " +
                                std::to_string(vocab_size));
  if (order < 1)
    throw std::invalid_argument("synthetic Markov chain: order must be >= 1, got " +
                                std::to_string(order));
}

double entropy_of(const std::vector<double>& distribution) {
  double entropy = 0.0;
  for (double p : distribution)
    if (p > 0.0) entropy -= p * std::log(p);
  return entropy;
}

}  // namespace

MarkovChainSpec default_synthetic_spec(int model_vocab_size, std::int64_t num_tokens) {
  // Why V = 16, order 2, branching 3: the model must learn one 3-way distribution per context,
  // and there are V^2 = 256 contexts, so 100-200k training tokens show each context ~400-800
  // times. An ideal online learner (Dirichlet counts per context, tests/io) is then within
  // ~0.005 nats of the floor, which leaves a 2-layer, 128-wide GPT room to be several times
  // less sample-efficient and still end within 0.05. The same learner on V = 32 is 0.02 above
  // the floor at 100-150k tokens and on V = 64 (4096 contexts) 0.13: too slow for the default
  // job. Branching 3 rather than 4 for the same reason (the cost grows with branching - 1).
  // Order 2 makes attention necessary: a model that sees only the current token is stuck at
  // H(X_1 | X_0) (about 2.2 nats here) instead of h (about 0.9).
  if (model_vocab_size < 2)
    throw std::invalid_argument("synthetic data needs a model vocabulary of at least 2 tokens");
  MarkovChainSpec spec;
  spec.vocab_size = std::min(16, model_vocab_size);
  spec.order = 2;
  spec.branching = std::min(3, spec.vocab_size);
  spec.num_tokens = num_tokens;
  return spec;
}

std::vector<std::int32_t> de_bruijn_sequence(int vocab_size, int order) {
  check_shape(vocab_size, order);
  checked_power(vocab_size, order);
  // Concatenating, in lexicographic order, the Lyndon words whose length divides `order` yields
  // a de Bruijn sequence (Fredricksen-Maiorana). The words are enumerated by Duval's successor
  // rule: bump the last letter, extend periodically to full length, drop trailing maximal
  // letters.
  std::vector<std::int32_t> sequence;
  std::vector<std::int32_t> word{-1};
  while (!word.empty()) {
    ++word.back();
    const std::size_t period = word.size();
    if (static_cast<std::size_t>(order) % period == 0)
      sequence.insert(sequence.end(), word.begin(), word.end());
    while (word.size() < static_cast<std::size_t>(order))
      word.push_back(word[word.size() - period]);
    while (!word.empty() && word.back() == vocab_size - 1) word.pop_back();
  }
  return sequence;
}

SyntheticMarkovSource::SyntheticMarkovSource(const MarkovChainSpec& spec) {
  check_shape(spec.vocab_size, spec.order);
  if (spec.branching < 1 || spec.branching > spec.vocab_size)
    throw std::invalid_argument("synthetic Markov chain: branching must be in [1, vocab_size=" +
                                std::to_string(spec.vocab_size) + "], got " +
                                std::to_string(spec.branching));
  vocab_size_ = spec.vocab_size;
  order_ = spec.order;
  num_contexts_ = checked_power(vocab_size_, order_);
  std::ostringstream label;
  label << "synthetic Markov chain (V=" << vocab_size_ << ", order " << order_ << ", branching "
        << spec.branching << ", seed " << spec.seed << ")";
  label_ = label.str();

  SplitMix64 random(mix64(spec.seed ^ kStructureStream));
  // A random relabelling of tokens, so the backbone cycle is not the lexicographic one.
  std::vector<std::int32_t> relabel(static_cast<std::size_t>(vocab_size_));
  std::iota(relabel.begin(), relabel.end(), 0);
  for (std::size_t i = relabel.size(); i > 1; --i)
    std::swap(relabel[i - 1], relabel[random.below(i)]);
  std::vector<std::int32_t> cycle = de_bruijn_sequence(vocab_size_, order_);
  for (std::int32_t& token : cycle) token = relabel[static_cast<std::size_t>(token)];

  // Backbone: every context's successor on the cycle is one of its possible next tokens.
  const std::int64_t length = num_contexts_;
  std::vector<std::int32_t> backbone(static_cast<std::size_t>(num_contexts_));
  for (std::int64_t start = 0; start < length; ++start) {
    std::int64_t context = 0;
    for (int i = 0; i < order_; ++i)
      context = context * vocab_size_ + cycle[static_cast<std::size_t>((start + i) % length)];
    backbone[static_cast<std::size_t>(context)] =
        cycle[static_cast<std::size_t>((start + order_) % length)];
  }

  const auto branching = static_cast<std::size_t>(spec.branching);
  next_begin_.resize(static_cast<std::size_t>(num_contexts_) + 1);
  next_token_.reserve(static_cast<std::size_t>(num_contexts_) * branching);
  next_probability_.reserve(next_token_.capacity());
  std::vector<std::int32_t> support;
  std::vector<double> weight;
  for (std::int64_t context = 0; context < num_contexts_; ++context) {
    support.assign(1, backbone[static_cast<std::size_t>(context)]);
    // Context 0 is "0 0 ... 0"; letting it repeat gives a cycle of length 1 next to the
    // backbone's cycle of length V^k: the chain becomes aperiodic.
    if (context == 0 && branching >= 2 && support[0] != 0) support.push_back(0);
    while (support.size() < branching) {
      const auto candidate = static_cast<std::int32_t>(random.below(vocab_size_));
      if (std::find(support.begin(), support.end(), candidate) == support.end())
        support.push_back(candidate);
    }
    // 0.25 + Exp(1): Dirichlet(1)-like variety, but no next token so rare (p >= ~0.05 for
    // branching 3) that the model cannot learn it, or that pi converges slowly.
    weight.resize(support.size());
    double total = 0.0;
    for (double& w : weight) total += (w = 0.25 + random.exponential());
    next_begin_[static_cast<std::size_t>(context)] = static_cast<std::int64_t>(next_token_.size());
    for (std::size_t i = 0; i < support.size(); ++i) {
      next_token_.push_back(support[i]);
      next_probability_.push_back(weight[i] / total);
    }
  }
  next_begin_.back() = static_cast<std::int64_t>(next_token_.size());
  compute_stationary();
  generate(spec.seed, spec.num_tokens);
}

double SyntheticMarkovSource::bytes_needed(const MarkovChainSpec& spec) {
  const double contexts = std::pow(static_cast<double>(std::max(spec.vocab_size, 0)),
                                   static_cast<double>(std::max(spec.order, 0)));
  const double edges = contexts * std::max(spec.branching, 0);
  const double tokens = static_cast<double>(std::max<std::int64_t>(spec.num_tokens, 0));
  // Alive throughout: next_begin_ (int64 per context + 1), next_token_ (int32 per edge) and
  // next_probability_ (double per edge).
  const double tables = 8 * (contexts + 1) + 12 * edges;
  // On top, in turn: the constructor's backbone and de Bruijn cycle (int32 per context each);
  // compute_stationary's two vectors (double per context); generate()'s stationary_,
  // next_cumulative_ and destinations (double per context, per edge, per edge) with the stream.
  const double building = 8 * contexts;
  const double stationary = 16 * contexts;
  const double generating = 8 * contexts + 16 * edges + 4 * tokens;
  return tables + std::max({building, stationary, generating});
}

SyntheticMarkovSource SyntheticMarkovSource::from_table(int vocab_size, int order,
                                                        const std::vector<double>& table,
                                                        std::uint64_t seed,
                                                        std::int64_t num_tokens) {
  check_shape(vocab_size, order);
  SyntheticMarkovSource chain;
  chain.vocab_size_ = vocab_size;
  chain.order_ = order;
  chain.num_contexts_ = checked_power(vocab_size, order);
  const auto row_length = static_cast<std::size_t>(vocab_size);
  if (table.size() != static_cast<std::size_t>(chain.num_contexts_) * row_length)
    throw std::invalid_argument(
        "Markov transition table has " + std::to_string(table.size()) +
        " entries; V^k x V = " + std::to_string(chain.num_contexts_ * vocab_size) + " expected");
  std::ostringstream label;
  label << "Markov chain from a table (V=" << vocab_size << ", order " << order << ", seed " << seed
        << ")";
  chain.label_ = label.str();
  chain.next_begin_.resize(static_cast<std::size_t>(chain.num_contexts_) + 1);
  for (std::int64_t context = 0; context < chain.num_contexts_; ++context) {
    const double* row = table.data() + static_cast<std::size_t>(context) * row_length;
    double total = 0.0;
    for (std::size_t next = 0; next < row_length; ++next) {
      if (!(row[next] >= 0.0) || !std::isfinite(row[next]))
        throw std::invalid_argument("Markov transition table: P(" + std::to_string(next) +
                                    " | context " + std::to_string(context) +
                                    ") is negative or not finite");
      total += row[next];
    }
    if (total <= 0.0)
      throw std::invalid_argument("Markov transition table: context " + std::to_string(context) +
                                  " has no next token with positive probability");
    chain.next_begin_[static_cast<std::size_t>(context)] =
        static_cast<std::int64_t>(chain.next_token_.size());
    for (std::size_t next = 0; next < row_length; ++next) {
      if (row[next] > 0.0) {
        chain.next_token_.push_back(static_cast<std::int32_t>(next));
        chain.next_probability_.push_back(row[next] / total);
      }
    }
  }
  chain.next_begin_.back() = static_cast<std::int64_t>(chain.next_token_.size());
  chain.check_irreducible();
  chain.compute_stationary();
  chain.generate(seed, num_tokens);
  return chain;
}

void SyntheticMarkovSource::check_irreducible() const {
  // Strongly connected <=> every context is reachable from context 0 and reaches it: a forward
  // search on the transition graph and one on its reverse.
  const auto contexts = static_cast<std::size_t>(num_contexts_);
  std::vector<std::vector<std::int64_t>> predecessors(contexts);
  for (std::size_t c = 0; c < contexts; ++c)
    for (std::int64_t e = next_begin_[c]; e < next_begin_[c + 1]; ++e)
      predecessors[static_cast<std::size_t>((static_cast<std::int64_t>(c) * vocab_size_ +
                                             next_token_[static_cast<std::size_t>(e)]) %
                                            num_contexts_)]
          .push_back(static_cast<std::int64_t>(c));
  for (int direction = 0; direction < 2; ++direction) {
    std::vector<char> seen(contexts, 0);
    std::vector<std::int64_t> frontier{0};
    seen[0] = 1;
    std::size_t reached = 1;
    while (!frontier.empty()) {
      const std::int64_t c = frontier.back();
      frontier.pop_back();
      auto visit = [&](std::int64_t other) {
        if (!seen[static_cast<std::size_t>(other)]) {
          seen[static_cast<std::size_t>(other)] = 1;
          ++reached;
          frontier.push_back(other);
        }
      };
      if (direction == 0) {
        for (std::int64_t e = next_begin_[static_cast<std::size_t>(c)];
             e < next_begin_[static_cast<std::size_t>(c) + 1]; ++e)
          visit((c * vocab_size_ + next_token_[static_cast<std::size_t>(e)]) % num_contexts_);
      } else {
        for (std::int64_t p : predecessors[static_cast<std::size_t>(c)]) visit(p);
      }
    }
    if (reached != contexts)
      throw std::invalid_argument("Markov transition table: the chain is not irreducible (" +
                                  std::to_string(contexts - reached) + " contexts " +
                                  (direction == 0 ? "cannot be reached from" : "cannot reach") +
                                  " context 0), so it has no unique stationary distribution");
  }
}

void SyntheticMarkovSource::compute_stationary() {
  // Power iteration on the lazy chain (I + P) / 2: it has the same stationary distribution as
  // P but converges even when P is periodic (e.g. a deterministic cycle).
  const auto contexts = static_cast<std::size_t>(num_contexts_);
  std::vector<double> current(contexts, 1.0 / static_cast<double>(contexts));
  std::vector<double> next(contexts);
  for (int iteration = 1; iteration <= kMaxStationaryIterations; ++iteration) {
    std::fill(next.begin(), next.end(), 0.0);
    for (std::size_t c = 0; c < contexts; ++c) {
      const double mass = current[c];
      if (mass == 0.0) continue;
      const std::int64_t shifted = static_cast<std::int64_t>(c) * vocab_size_ % num_contexts_;
      for (std::int64_t e = next_begin_[c]; e < next_begin_[c + 1]; ++e) {
        const auto edge = static_cast<std::size_t>(e);
        next[static_cast<std::size_t>(shifted + next_token_[edge])] +=
            mass * next_probability_[edge];
      }
    }
    // Here next = current * P. Stop when ||current P - current||_1 is below the tolerance.
    double change = 0.0;
    double total = 0.0;
    for (std::size_t c = 0; c < contexts; ++c) {
      change += std::abs(next[c] - current[c]);
      next[c] = 0.5 * (next[c] + current[c]);
      total += next[c];
    }
    for (double& p : next) p /= total;
    current.swap(next);
    if (change < kStationaryTolerance) {
      stationary_ = std::move(current);
      stationary_iterations_ = iteration;
      entropy_rate_ = 0.0;
      for (std::size_t c = 0; c < contexts; ++c) {
        double row_entropy = 0.0;
        for (std::int64_t e = next_begin_[c]; e < next_begin_[c + 1]; ++e) {
          const double p = next_probability_[static_cast<std::size_t>(e)];
          if (p > 0.0) row_entropy -= p * std::log(p);
        }
        entropy_rate_ += stationary_[c] * row_entropy;
      }
      return;
    }
  }
  throw std::runtime_error(label_ + ": stationary distribution did not converge to " +
                           std::to_string(kStationaryTolerance) + " in " +
                           std::to_string(kMaxStationaryIterations) + " iterations");
}

void SyntheticMarkovSource::generate(std::uint64_t seed, std::int64_t num_tokens) {
  if (num_tokens < 0)
    throw std::invalid_argument("synthetic Markov chain: num_tokens must be >= 0");
  const auto contexts = static_cast<std::size_t>(num_contexts_);
  // Cumulative probabilities per context, the last forced to 1 so rounding never walks off
  // the end of a run; and each edge's destination context, so the hot loop has no division.
  next_cumulative_.resize(next_probability_.size());
  std::vector<std::int64_t> destination(next_token_.size());
  for (std::size_t c = 0; c < contexts; ++c) {
    double running = 0.0;
    const std::int64_t shifted = static_cast<std::int64_t>(c) * vocab_size_ % num_contexts_;
    for (std::int64_t e = next_begin_[c]; e < next_begin_[c + 1]; ++e) {
      const auto edge = static_cast<std::size_t>(e);
      running += next_probability_[edge];
      next_cumulative_[edge] = e + 1 == next_begin_[c + 1] ? 1.0 : running;
      destination[edge] = shifted + next_token_[edge];
    }
  }

  SplitMix64 random(mix64(seed ^ kTokenStream));
  // The first context is drawn from pi: the stream is stationary from token 0.
  std::int64_t context = num_contexts_ - 1;
  double u = random.uniform();
  for (std::size_t c = 0; c < contexts; ++c) {
    if (u < stationary_[c]) {
      context = static_cast<std::int64_t>(c);
      break;
    }
    u -= stationary_[c];
  }
  tokens_.assign(static_cast<std::size_t>(num_tokens), 0);
  std::int64_t digits = context;
  for (int i = order_ - 1; i >= 0; --i) {
    if (i < num_tokens)
      tokens_[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(digits % vocab_size_);
    digits /= vocab_size_;
  }
  for (std::int64_t t = order_; t < num_tokens; ++t) {
    const double draw = random.uniform();
    std::size_t edge = static_cast<std::size_t>(next_begin_[static_cast<std::size_t>(context)]);
    while (draw >= next_cumulative_[edge]) ++edge;
    tokens_[static_cast<std::size_t>(t)] = next_token_[edge];
    context = destination[edge];
  }
}

void SyntheticMarkovSource::read(std::int64_t offset, std::int64_t count, std::int32_t* out) const {
  check_range(offset, count);
  if (count > 0)
    std::memcpy(out, tokens_.data() + offset, static_cast<std::size_t>(count) * sizeof(*out));
}

std::string SyntheticMarkovSource::describe() const {
  std::ostringstream text;
  text << label_ << ": " << tokens_.size() << " tokens, entropy rate " << std::fixed
       << std::setprecision(4) << entropy_rate_ << " nats/token";
  return text.str();
}

std::vector<double> SyntheticMarkovSource::block_distribution(int n) const {
  if (n < 0 || n > order_)
    throw std::invalid_argument("block_distribution: n must be in [0, order=" +
                                std::to_string(order_) + "], got " + std::to_string(n));
  const std::int64_t blocks = checked_power(vocab_size_, n);
  const std::int64_t dropped = num_contexts_ / blocks;  // V^(k-n): the later k-n tokens
  std::vector<double> distribution(static_cast<std::size_t>(blocks), 0.0);
  for (std::int64_t c = 0; c < num_contexts_; ++c)
    distribution[static_cast<std::size_t>(c / dropped)] += stationary_[static_cast<std::size_t>(c)];
  return distribution;
}

double SyntheticMarkovSource::block_entropy(int n) const {
  if (n == order_ + 1) return entropy_of(stationary_) + entropy_rate_;
  return entropy_of(block_distribution(n));
}

double SyntheticMarkovSource::window_floor(std::int64_t seq_len) const {
  if (seq_len < 1)
    throw std::invalid_argument("window_floor: seq_len must be >= 1, got " +
                                std::to_string(seq_len));
  // Target j (1-based) sees j tokens. With fewer than k of them its uncertainty is
  // H(X_j | X_0..X_{j-1}) = H_{j+1} - H_j; from j = k on the chain's own context is visible.
  double total = 0.0;
  const std::int64_t partial = std::min<std::int64_t>(seq_len, order_ - 1);
  for (std::int64_t j = 1; j <= partial; ++j)
    total += block_entropy(static_cast<int>(j + 1)) - block_entropy(static_cast<int>(j));
  total += static_cast<double>(seq_len - partial) * entropy_rate_;
  return total / static_cast<double>(seq_len);
}

double SyntheticMarkovSource::probability(std::int64_t context, int next) const {
  if (context < 0 || context >= num_contexts_)
    throw std::invalid_argument("probability: context " + std::to_string(context) +
                                " is outside [0, " + std::to_string(num_contexts_) + ")");
  for (std::int64_t e = next_begin_[static_cast<std::size_t>(context)];
       e < next_begin_[static_cast<std::size_t>(context) + 1]; ++e)
    if (next_token_[static_cast<std::size_t>(e)] == next)
      return next_probability_[static_cast<std::size_t>(e)];
  return 0.0;
}

}  // namespace zt::io
