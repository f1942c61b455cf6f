// SPDX-License-Identifier: Apache-2.0
// The built-in synthetic data: a seeded random Markov chain of order k whose entropy rate, and
// the lowest loss a model can reach on a training window, are computed exactly. The default
// job shows its loss approaching that floor.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/token_source.hpp"

namespace zt::io {

struct MarkovChainSpec {
  int vocab_size = 16;  ///< V: tokens are 0..V-1
  int order = 2;        ///< k: the next token depends on the k previous ones
  int branching = 3;    ///< next tokens possible after each context (its support size)
  std::uint64_t seed = 1234;
  std::int64_t num_tokens = std::int64_t{1} << 20;  ///< length of the generated stream
};

/// The chain the built-in job trains on, for a model with model_vocab_size tokens: V = 16 (or
/// the model's vocabulary if smaller), order 2, branching 3. See the .cpp for why.
MarkovChainSpec default_synthetic_spec(int model_vocab_size, std::int64_t num_tokens);

/// A stationary token stream from an order-k Markov chain.
///
/// The random chain (MarkovChainSpec) gives each of the V^k contexts `branching` possible next
/// tokens with weights 0.25 + Exp(1), normalized. It is irreducible by construction: one of
/// the next tokens of every context is its successor on a de Bruijn cycle (a cycle through all
/// V^k contexts, under a random relabelling of tokens), so every context reaches every other.
/// With branching >= 2 the all-zeros context may also repeat itself, a cycle of length 1, which
/// makes the chain aperiodic. Hence the stationary distribution pi exists, is unique, and the
/// stream is ergodic.
///
/// The stream starts from a context drawn from pi, so it is stationary from its first token (no
/// burn-in to discard), and depends only on the spec: every rank builds the same tokens.
class SyntheticMarkovSource final : public TokenSource {
 public:
  explicit SyntheticMarkovSource(const MarkovChainSpec& spec);

  /// The most host memory the constructor holds at once for this spec, in bytes: the token
  /// stream (4 per token) and the transition tables (V^order contexts x branching), at their
  /// peak while the stream is generated. In double and without building anything, so that a
  /// run can refuse a spec it cannot hold (num_tokens 1e12 is 4 TB) before allocating; the
  /// constructor may still refuse the spec (too many contexts, a bad branching).
  static double bytes_needed(const MarkovChainSpec& spec);

  /// A chain given by its transition table: row c (the context x_1..x_k read as a base-V number,
  /// x_k least significant) holds P(next | c) for next = 0..V-1. Rows are normalized; throws
  /// std::invalid_argument when a row is negative or all zero or the chain is not irreducible.
  static SyntheticMarkovSource from_table(int vocab_size, int order,
                                          const std::vector<double>& transition_table,
                                          std::uint64_t seed, std::int64_t num_tokens);

  std::int64_t size() const override { return static_cast<std::int64_t>(tokens_.size()); }
  void read(std::int64_t offset, std::int64_t count, std::int32_t* out) const override;
  std::string describe() const override;
  int vocab_size_hint() const override { return vocab_size_; }

  int vocab_size() const { return vocab_size_; }
  int order() const { return order_; }
  std::int64_t num_contexts() const { return num_contexts_; }
  const std::vector<std::int32_t>& tokens() const { return tokens_; }

  /// h = sum over contexts of pi(c) * H(P(.|c)), in nats.
  double entropy_rate() const { return entropy_rate_; }

  /// Lowest mean cross-entropy (nats) over the T targets of a training window of T+1
  /// stationary tokens, where target t (x[t+1]) may only use x[0..t]:
  /// (1/T) * sum_{j=1..T} H(X_j | X_0..X_{j-1}). For j >= k the term is h; for j < k it is
  /// H_{j+1} - H_j with H_n the entropy of n consecutive tokens. The first target has one token
  /// of context, so the floor lies above h by (sum_{j<k} (H_{j+1} - H_j) - (k-1) h) / T.
  double window_floor(std::int64_t seq_len) const;

  /// H_n: entropy (nats) of n consecutive tokens of the stationary stream, 0 <= n <= k + 1.
  double block_entropy(int n) const;

  /// Stationary probability of each n-token block (n <= k), indexed base-V like contexts.
  std::vector<double> block_distribution(int n) const;

  /// Stationary distribution over contexts.
  const std::vector<double>& stationary() const { return stationary_; }

  /// P(next | context) for a context index as in from_table.
  double probability(std::int64_t context, int next) const;

  /// Power-iteration steps it took to converge pi (to 1e-12 in L1 between steps).
  int stationary_iterations() const { return stationary_iterations_; }

 private:
  SyntheticMarkovSource() = default;
  void check_irreducible() const;
  void compute_stationary();
  void generate(std::uint64_t seed, std::int64_t num_tokens);

  int vocab_size_ = 0;
  int order_ = 0;
  std::int64_t num_contexts_ = 0;
  std::string label_;
  // Sparse transitions, one run per context: next_begin_[c] .. next_begin_[c + 1] index
  // next_token_ / next_probability_ / next_cumulative_.
  std::vector<std::int64_t> next_begin_;
  std::vector<std::int32_t> next_token_;
  std::vector<double> next_probability_;
  std::vector<double> next_cumulative_;
  std::vector<double> stationary_;
  int stationary_iterations_ = 0;
  double entropy_rate_ = 0.0;
  std::vector<std::int32_t> tokens_;
};

/// A de Bruijn sequence over {0..vocab_size-1} of order `order`: length V^k, and read
/// cyclically every k-token string appears exactly once.
std::vector<std::int32_t> de_bruijn_sequence(int vocab_size, int order);

}  // namespace zt::io
