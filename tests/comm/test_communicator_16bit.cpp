// SPDX-License-Identifier: Apache-2.0
// fp16 and bf16 collectives of the MPI backend: the per-hop reduction (reduce_local, which the
// MPI user-defined operations run) against kernels/ops/dtype.hpp bit for bit, then every
// collective with both progress modes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "comm/communicator.hpp"
#include "kernels/ops/dtype.hpp"

using zt::comm::Collective;
using zt::comm::Communicator;
using zt::comm::DataType;
using zt::comm::ReduceOp;
using zt::comm::Traffic;
using zt::kernels::bf16;
using zt::kernels::fp16;
using zt::kernels::from_float;
using zt::kernels::to_float;

namespace {

template <class T>
struct Format;
template <>
struct Format<fp16> {
  static constexpr DataType type = DataType::Float16;
  static constexpr int significand_bits = 11;       // unit roundoff u = 2^-11
  static constexpr std::uint16_t largest = 0x7bff;  // 65504
  static constexpr float half_ulp_of_largest = 16.0f;
  static constexpr int max_exponent = 15;
  static constexpr std::uint16_t infinity = 0x7c00;
  static constexpr std::uint16_t quiet_nan = 0x7e00;
};
template <>
struct Format<bf16> {
  static constexpr DataType type = DataType::BFloat16;
  static constexpr int significand_bits = 8;
  static constexpr std::uint16_t largest = 0x7f7f;  // (2 - 2^-7) * 2^127
  static constexpr float half_ulp_of_largest = 0x1p119f;
  static constexpr int max_exponent = 127;
  static constexpr std::uint16_t infinity = 0x7f80;
  static constexpr std::uint16_t quiet_nan = 0x7fc0;
};

template <class T>
bool is_nan(T value) {
  return (value.bits & 0x7fffu) > Format<T>::infinity;
}

/// `value`, which the test chose to be exactly representable in T.
template <class T>
T exactly(float value) {
  const T result = from_float<T>(value);
  EXPECT_EQ(to_float(result), value) << value << " is not exact in this format";
  return result;
}

/// One hop as reduction.cpp must compute it, from the dtype.hpp conversions: widen, add in
/// float, round once; NaN canonical.
template <class T>
std::uint16_t reference_sum(T a, T b) {
  const T sum = from_float<T>(to_float(a) + to_float(b));
  return is_nan(sum) ? Format<T>::quiet_nan : sum.bits;
}

template <class T>
T hop(T in, T inout, ReduceOp op) {
  zt::comm::reduce_local(&in, &inout, 1, Format<T>::type, op);
  return inout;
}

/// Bit patterns that stress conversions and comparisons: zeros, subnormals, the normal range's
/// ends, infinities and NaNs with payloads and either sign.
template <class T>
std::vector<T> special_values() {
  const std::uint16_t inf = Format<T>::infinity;
  std::vector<std::uint16_t> bits = {0x0000,
                                     0x8000,
                                     0x0001,
                                     0x8001,
                                     0x03ff,
                                     0x0400,
                                     0x3c00,
                                     0xbc00,
                                     0x3c01,
                                     Format<T>::largest,
                                     static_cast<std::uint16_t>(Format<T>::largest | 0x8000),
                                     inf,
                                     static_cast<std::uint16_t>(inf | 0x8000),
                                     static_cast<std::uint16_t>(inf | 1),
                                     Format<T>::quiet_nan,
                                     static_cast<std::uint16_t>(Format<T>::quiet_nan | 0x8005)};
  std::vector<T> values;
  for (const std::uint16_t b : bits) values.push_back(T{b});
  return values;
}

template <class T>
class ReduceLocal16 : public ::testing::Test {};

template <class T>
class Collectives16 : public ::testing::Test {
 protected:
  // Every test runs with collectives on the progress thread and started inline.
  void SetUp() override {
    comms.push_back(zt::comm::make_mpi_communicator(MPI_COMM_WORLD, zt::comm::MpiProgress::Thread));
    comms.push_back(zt::comm::make_mpi_communicator(MPI_COMM_WORLD, zt::comm::MpiProgress::Inline));
  }
  static const char* mode(std::size_t k) { return k == 0 ? "progress thread" : "inline"; }

  std::vector<std::unique_ptr<Communicator>> comms;
  static constexpr DataType type = Format<T>::type;
};

struct FormatNames {
  template <class T>
  static std::string GetName(int) {
    return std::is_same_v<T, fp16> ? "fp16" : "bf16";
  }
};

using Formats = ::testing::Types<fp16, bf16>;
TYPED_TEST_SUITE(ReduceLocal16, Formats, FormatNames);
TYPED_TEST_SUITE(Collectives16, Formats, FormatNames);

// ---- one hop ------------------------------------------------------------------------------

TYPED_TEST(ReduceLocal16, SumMatchesTheDtypeConversionsForEveryInput) {
  using T = TypeParam;
  // Adding -0 returns every non-NaN input unchanged, so this checks the widening of all 65536
  // patterns (reduction.cpp has its own, branch-free one) against to_float's.
  const std::size_t n = 1u << 16;
  std::vector<T> all(n);
  for (std::size_t i = 0; i < n; ++i) all[i].bits = static_cast<std::uint16_t>(i);
  for (const std::uint16_t zero : {std::uint16_t{0x8000}, std::uint16_t{0x0000}}) {
    std::vector<T> result(n, T{zero});
    // Two calls: the first all scalar tail, the second vector body plus a tail of one.
    zt::comm::reduce_local(all.data(), result.data(), 7, Format<T>::type, ReduceOp::Sum);
    zt::comm::reduce_local(all.data() + 7, result.data() + 7, n - 7, Format<T>::type,
                           ReduceOp::Sum);
    for (std::size_t i = 0; i < n; ++i) {
      ASSERT_EQ(result[i].bits, reference_sum(all[i], T{zero})) << std::hex << "input " << i;
      if (zero == 0x8000 && !is_nan(all[i])) {
        ASSERT_EQ(result[i].bits, all[i].bits);
      }
    }
  }
  // Random pairs, and every input against the special values, in both operand orders: the
  // same bits (the op is declared commutative to MPI).
  std::mt19937 random(7);
  std::vector<T> a(n), b(n);
  for (std::size_t i = 0; i < n; ++i) {
    a[i].bits = static_cast<std::uint16_t>(random());
    b[i].bits = static_cast<std::uint16_t>(random());
  }
  for (const T special : special_values<T>()) {
    for (std::size_t i = 0; i < n; i += 7) b[i] = special;
    std::vector<T> ab = b, ba = a;
    zt::comm::reduce_local(a.data(), ab.data(), 5, Format<T>::type, ReduceOp::Sum);
    zt::comm::reduce_local(a.data() + 5, ab.data() + 5, n - 5, Format<T>::type, ReduceOp::Sum);
    zt::comm::reduce_local(b.data(), ba.data(), n, Format<T>::type, ReduceOp::Sum);
    for (std::size_t i = 0; i < n; ++i) {
      ASSERT_EQ(ab[i].bits, reference_sum(a[i], b[i])) << std::hex << a[i].bits << "+" << b[i].bits;
      ASSERT_EQ(ba[i].bits, ab[i].bits) << std::hex << a[i].bits << "+" << b[i].bits;
    }
  }
}

TYPED_TEST(ReduceLocal16, SumRoundsOnceToNearestEven) {
  using T = TypeParam;
  const int p = Format<T>::significand_bits;
  const float u = std::ldexp(1.0f, -p);  // half an ulp of 1
  const T one = exactly<T>(1.0f);
  // 1 + u is a tie: to the even neighbour 1. 1 + 3u is a tie between 1 + 2u (odd) and
  // 1 + 4u (even). Just above a tie rounds up: truncation (or rounding in 16-bit steps) fails.
  EXPECT_EQ(to_float(hop(one, exactly<T>(u), ReduceOp::Sum)), 1.0f);
  EXPECT_EQ(to_float(hop(one, exactly<T>(3 * u), ReduceOp::Sum)), 1.0f + 4 * u);
  EXPECT_EQ(to_float(hop(one, exactly<T>(u + u * u * 4), ReduceOp::Sum)), 1.0f + 2 * u);
  // Past the largest finite value: half an ulp more is a tie with inf (the largest is odd).
  const T largest{Format<T>::largest};
  const float half_ulp = Format<T>::half_ulp_of_largest;
  EXPECT_EQ(hop(largest, exactly<T>(half_ulp), ReduceOp::Sum).bits, Format<T>::infinity);
  EXPECT_EQ(hop(largest, exactly<T>(half_ulp / 2), ReduceOp::Sum).bits, Format<T>::largest);
  EXPECT_EQ(hop(T{static_cast<std::uint16_t>(largest.bits | 0x8000)}, exactly<T>(-half_ulp),
                ReduceOp::Sum)
                .bits,
            Format<T>::infinity | 0x8000);
  // inf + -inf is NaN; NaN + anything is NaN.
  const T inf{Format<T>::infinity};
  const T minus_inf{static_cast<std::uint16_t>(Format<T>::infinity | 0x8000)};
  EXPECT_EQ(hop(inf, minus_inf, ReduceOp::Sum).bits, Format<T>::quiet_nan);
  EXPECT_EQ(hop(T{0xffff}, inf, ReduceOp::Sum).bits, Format<T>::quiet_nan);
}

TYPED_TEST(ReduceLocal16, MaxAndMinReturnAnInputAndLetNanWin) {
  using T = TypeParam;
  const auto specials = special_values<T>();
  std::mt19937 random(11);
  std::vector<T> values = specials;
  for (int i = 0; i < 2000; ++i) values.push_back(T{static_cast<std::uint16_t>(random())});
  for (const T a : values) {
    for (const T b : specials) {
      for (const ReduceOp op : {ReduceOp::Max, ReduceOp::Min}) {
        const T ab = hop(a, b, op);
        const T ba = hop(b, a, op);
        ASSERT_EQ(ab.bits, ba.bits) << std::hex << a.bits << " " << b.bits;
        ASSERT_TRUE(ab.bits == a.bits || ab.bits == b.bits);
        if (is_nan(a) || is_nan(b)) {
          ASSERT_TRUE(is_nan(ab));
          continue;
        }
        const float x = to_float(a);
        const float y = to_float(b);
        const bool max = op == ReduceOp::Max;
        if (x != y) {
          ASSERT_EQ(to_float(ab), max ? std::max(x, y) : std::min(x, y));
        }
        if (x == 0 && y == 0 && a.bits != b.bits) {  // +0 and -0
          ASSERT_EQ(ab.bits, max ? 0x0000 : 0x8000);
        }
      }
    }
  }
}

// ---- collectives --------------------------------------------------------------------------

/// Element checks of the collective tests: counts failures and keeps the first. EXPECT rather
/// than ASSERT there: a rank that left a test early would leave the others waiting in its next
/// collective until the ctest timeout; one report per check keeps a broken collective from
/// printing thousands of lines. Report with EXPECT_EQ(tally.wrong, 0) << tally.first.
struct Tally {
  std::int64_t wrong = 0;
  std::string first;

  template <class... Parts>
  void check(bool ok, const Parts&... parts) {
    if (ok || wrong++ > 0) return;
    std::ostringstream text;
    (text << ... << parts);
    first = text.str();
  }
};

/// Small integers times powers of two: every partial sum over up to 4 ranks is an integer of
/// at most 8 bits times the element's power of two, exact in both formats.
float exact_value(int rank, std::int64_t i) {
  return static_cast<float>((i * 7 + rank * 5) % 31 - 15) *
         std::ldexp(1.0f, static_cast<int>(i % 11) - 5);
}

TYPED_TEST(Collectives16, AllReduceAndReduceScatterSumExactlyAlsoInPlace) {
  using T = TypeParam;
  for (std::size_t k = 0; k < this->comms.size(); ++k) {
    SCOPED_TRACE(this->mode(k));
    Communicator& comm = *this->comms[k];
    const int rank = comm.rank();
    const int size = comm.size();
    const std::int64_t per_rank = 1031;
    const std::int64_t n = per_rank * size;
    std::vector<T> send(n);
    std::vector<float> expected(n, 0.0f);
    for (std::int64_t i = 0; i < n; ++i) {
      send[i] = exactly<T>(exact_value(rank, i));
      for (int r = 0; r < size; ++r) expected[i] += exact_value(r, i);
    }
    std::vector<T> result(n);
    comm.all_reduce(send.data(), result.data(), n, this->type, ReduceOp::Sum);
    std::vector<T> in_place = send;
    comm.all_reduce(in_place.data(), in_place.data(), n, this->type, ReduceOp::Sum);
    Tally sums;
    for (std::int64_t i = 0; i < n; ++i) {
      sums.check(to_float(result[i]) == expected[i], "element ", i, ": ", to_float(result[i]),
                 " != ", expected[i]);
      sums.check(to_float(in_place[i]) == expected[i], "in place, element ", i, ": ",
                 to_float(in_place[i]), " != ", expected[i]);
    }
    EXPECT_EQ(sums.wrong, 0) << sums.first;

    std::vector<T> mine(per_rank);
    comm.reduce_scatter(send.data(), mine.data(), per_rank, this->type, ReduceOp::Sum);
    // In place: the whole input in the buffer, this rank's block of the result at its start.
    std::vector<T> buffer = send;
    comm.reduce_scatter(buffer.data(), buffer.data(), per_rank, this->type, ReduceOp::Sum);
    Tally blocks;
    for (std::int64_t i = 0; i < per_rank; ++i) {
      const float want = expected[rank * per_rank + i];
      blocks.check(to_float(mine[i]) == want, "element ", i, ": ", to_float(mine[i]), " != ", want);
      blocks.check(to_float(buffer[i]) == want, "in place, element ", i, ": ", to_float(buffer[i]),
                   " != ", want);
    }
    EXPECT_EQ(blocks.wrong, 0) << blocks.first;
  }
}

TYPED_TEST(Collectives16, SumOfGeneralValuesStaysWithinThePerHopRoundingBound) {
  using T = TypeParam;
  for (std::size_t k = 0; k < this->comms.size(); ++k) {
    SCOPED_TRACE(this->mode(k));
    Communicator& comm = *this->comms[k];
    const int rank = comm.rank();
    const int size = comm.size();
    const std::int64_t per_rank = 4096;
    const std::int64_t n = per_rank * size;
    // Every rank can make every rank's inputs: uniform in [-1, 1] scaled by 2^[-8, 8], so the
    // terms differ in magnitude and sign and the sums cancel.
    auto inputs = [&](int r) {
      std::mt19937 random(1234 + r);
      std::uniform_real_distribution<float> mantissa(-1.0f, 1.0f);
      std::uniform_int_distribution<int> exponent(-8, 8);
      std::vector<T> values(n);
      for (auto& v : values) v = from_float<T>(std::ldexp(mantissa(random), exponent(random)));
      return values;
    };
    std::vector<double> exact(n, 0.0), magnitude(n, 0.0);
    for (int r = 0; r < size; ++r) {
      const std::vector<T> values = inputs(r);
      for (std::int64_t i = 0; i < n; ++i) {
        exact[i] += to_float(values[i]);
        magnitude[i] += std::fabs(to_float(values[i]));
      }
    }
    // Each hop is one correctly rounded addition, fl(a + b) = (a + b)(1 + d) with |d| <= u =
    // 2^-p (the fp32 intermediate rounds innocuously, and a sum that lands among the
    // subnormals is exact). A reduction tree over `size` inputs has at most size - 1
    // additions on any path, so whatever tree MPI picks, |result - exact| <= g * sum |x_i|
    // with g = (size-1) u / (1 - (size-1) u) (Higham, Accuracy and Stability, §4.2).
    const double u = std::ldexp(1.0, -Format<T>::significand_bits);
    const double hops = size - 1;
    const double gamma = hops * u / (1 - hops * u);

    const std::vector<T> send = inputs(rank);
    std::vector<T> result(n);
    comm.all_reduce(send.data(), result.data(), n, this->type, ReduceOp::Sum);
    int inexact = 0;
    Tally bound;
    for (std::int64_t i = 0; i < n; ++i) {
      const double error = std::fabs(to_float(result[i]) - exact[i]);
      bound.check(error <= gamma * magnitude[i], "element ", i, ": error ", error, " > ",
                  gamma * magnitude[i]);
      inexact += error > 0;
    }
    EXPECT_EQ(bound.wrong, 0) << bound.first;
    // The inputs do need rounding (else the bound above tests nothing).
    if (size > 1) {
      EXPECT_GT(inexact, n / 10);
    }

    // Every rank holds the same bits: gather them and compare with this rank's.
    std::vector<T> everyone(n * size);
    comm.all_gather(result.data(), everyone.data(), n, this->type);
    Tally same;
    for (int r = 0; r < size; ++r)
      for (std::int64_t i = 0; i < n; ++i)
        same.check(everyone[r * n + i].bits == result[i].bits, "rank ", r, " element ", i);
    EXPECT_EQ(same.wrong, 0) << same.first;

    std::vector<T> mine(per_rank);
    comm.reduce_scatter(send.data(), mine.data(), per_rank, this->type, ReduceOp::Sum);
    Tally block_bound;
    for (std::int64_t i = 0; i < per_rank; ++i) {
      const std::int64_t global = rank * per_rank + i;
      block_bound.check(std::fabs(to_float(mine[i]) - exact[global]) <= gamma * magnitude[global],
                        "element ", i);
    }
    EXPECT_EQ(block_bound.wrong, 0) << block_bound.first;
  }
}

TYPED_TEST(Collectives16, MaxAndMinAcrossRanks) {
  using T = TypeParam;
  for (std::size_t k = 0; k < this->comms.size(); ++k) {
    SCOPED_TRACE(this->mode(k));
    Communicator& comm = *this->comms[k];
    const int size = comm.size();
    const std::int64_t n = 777;
    auto value = [](int r, std::int64_t i) {
      return static_cast<float>((i * 13 + r * 7) % 23 - 11) * 0.25f;
    };
    std::vector<T> send(n);
    for (std::int64_t i = 0; i < n; ++i) send[i] = exactly<T>(value(comm.rank(), i));
    std::vector<T> max(n), min(n);
    comm.all_reduce(send.data(), max.data(), n, this->type, ReduceOp::Max);
    comm.all_reduce(send.data(), min.data(), n, this->type, ReduceOp::Min);
    Tally extremes;
    for (std::int64_t i = 0; i < n; ++i) {
      float high = value(0, i), low = value(0, i);
      for (int r = 1; r < size; ++r) {
        high = std::max(high, value(r, i));
        low = std::min(low, value(r, i));
      }
      extremes.check(to_float(max[i]) == high, "max, element ", i);
      extremes.check(to_float(min[i]) == low, "min, element ", i);
    }
    EXPECT_EQ(extremes.wrong, 0) << extremes.first;
  }
}

/// Rank `source`'s contribution to a block owned by some rank: +inf at `source`, NaN at
/// size + source, -inf at 2 size + source; the last element +inf on rank 0 and -inf on the
/// last rank (NaN when they differ). Everything else is 1.
template <class T>
void fill_block(T* block, std::int64_t count, int source, int size) {
  for (std::int64_t i = 0; i < count; ++i) block[i] = exactly<T>(1.0f);
  const T inf{Format<T>::infinity};
  const T minus_inf{static_cast<std::uint16_t>(Format<T>::infinity | 0x8000)};
  block[source] = inf;
  block[size + source] = T{static_cast<std::uint16_t>(Format<T>::quiet_nan | 0x8003)};
  block[2 * size + source] = minus_inf;
  if (source == 0) block[count - 1] = inf;
  if (source == size - 1 && size > 1) block[count - 1] = minus_inf;
}

template <class T>
void expect_block(const T* block, std::int64_t count, int size) {
  for (int s = 0; s < size; ++s) {
    EXPECT_EQ(block[s].bits, Format<T>::infinity) << "inf from rank " << s;
    EXPECT_TRUE(is_nan(block[size + s])) << "NaN from rank " << s;
    EXPECT_EQ(block[2 * size + s].bits, Format<T>::infinity | 0x8000) << "-inf from rank " << s;
  }
  for (std::int64_t i = 3 * size; i < count - 1; ++i)
    EXPECT_EQ(to_float(block[i]), static_cast<float>(size)) << "element " << i;
  if (size > 1) {
    EXPECT_TRUE(is_nan(block[count - 1])) << "inf + -inf";
  } else {
    EXPECT_EQ(block[count - 1].bits, Format<T>::infinity);
  }
}

TYPED_TEST(Collectives16, InfAndNanFromOneRankReachTheOwner) {
  using T = TypeParam;
  for (std::size_t k = 0; k < this->comms.size(); ++k) {
    SCOPED_TRACE(this->mode(k));
    Communicator& comm = *this->comms[k];
    const int rank = comm.rank();
    const int size = comm.size();
    const std::int64_t per_rank = 3 * size + 5;
    std::vector<T> send(per_rank * size);
    for (int owner = 0; owner < size; ++owner)
      fill_block(send.data() + owner * per_rank, per_rank, rank, size);

    std::vector<T> mine(per_rank);
    comm.reduce_scatter(send.data(), mine.data(), per_rank, this->type, ReduceOp::Sum);
    expect_block(mine.data(), per_rank, size);

    std::vector<T> all(send.size());
    comm.all_reduce(send.data(), all.data(), per_rank * size, this->type, ReduceOp::Sum);
    for (int owner = 0; owner < size; ++owner)
      expect_block(all.data() + owner * per_rank, per_rank, size);

    // Uneven blocks (rank 0's the shortest): the v variant's hops see the same specials.
    std::vector<std::int64_t> counts(size);
    for (int r = 0; r < size; ++r) counts[r] = per_rank + r;
    std::vector<T> uneven;
    for (int owner = 0; owner < size; ++owner) {
      std::vector<T> block(counts[owner]);
      fill_block(block.data(), counts[owner], rank, size);
      uneven.insert(uneven.end(), block.begin(), block.end());
    }
    std::vector<T> own_block(counts[rank]);
    comm.reduce_scatter_v(uneven.data(), own_block.data(), counts, this->type, ReduceOp::Sum);
    expect_block(own_block.data(), counts[rank], size);
  }
}

TYPED_TEST(Collectives16, SumPastTheLargestFiniteValueIsInf) {
  using T = TypeParam;
  for (std::size_t k = 0; k < this->comms.size(); ++k) {
    SCOPED_TRACE(this->mode(k));
    Communicator& comm = *this->comms[k];
    const int rank = comm.rank();
    const int size = comm.size();
    const bool first = rank == 0;
    const bool last = rank == size - 1 && size > 1;
    const float half_ulp = Format<T>::half_ulp_of_largest;
    const T largest{Format<T>::largest};
    const T zero{0};
    // [0]: largest + half an ulp (from another rank): a tie, to inf. [1]: a quarter ulp:
    // stays the largest. [2]: -largest - half an ulp: -inf. [3]: 1.5 * 2^emax from every rank.
    std::vector<T> send = {first  ? largest
                           : last ? exactly<T>(half_ulp)
                                  : zero,
                           first  ? largest
                           : last ? exactly<T>(half_ulp / 2)
                                  : zero,
                           first  ? T{static_cast<std::uint16_t>(largest.bits | 0x8000)}
                           : last ? exactly<T>(-half_ulp)
                                  : zero,
                           exactly<T>(std::ldexp(1.5f, Format<T>::max_exponent))};
    std::vector<T> result(send.size());
    comm.all_reduce(send.data(), result.data(), 4, this->type, ReduceOp::Sum);
    EXPECT_EQ(result[0].bits, size > 1 ? Format<T>::infinity : Format<T>::largest);
    EXPECT_EQ(result[1].bits, Format<T>::largest);
    EXPECT_EQ(result[2].bits,
              size > 1 ? Format<T>::infinity | 0x8000 : Format<T>::largest | 0x8000);
    EXPECT_EQ(result[3].bits, size > 1 ? Format<T>::infinity : send[3].bits);
  }
}

TYPED_TEST(Collectives16, BroadcastAndAllGatherMoveBitsUnchangedAlsoInPlace) {
  using T = TypeParam;
  for (std::size_t k = 0; k < this->comms.size(); ++k) {
    SCOPED_TRACE(this->mode(k));
    Communicator& comm = *this->comms[k];
    const int rank = comm.rank();
    const int size = comm.size();
    const std::vector<T> specials = special_values<T>();
    const std::int64_t n = static_cast<std::int64_t>(specials.size());
    // Rank r's pattern: the specials rotated by r, so ranks differ.
    auto pattern = [&](int r, std::int64_t i) { return specials[(i + r) % n].bits; };

    const int root = size - 1;
    std::vector<T> buffer(n);
    for (std::int64_t i = 0; i < n; ++i)
      buffer[i] = T{rank == root ? pattern(root, i) : std::uint16_t{0x1234}};
    comm.broadcast(buffer.data(), n, this->type, root);
    Tally bits;
    for (std::int64_t i = 0; i < n; ++i)
      bits.check(buffer[i].bits == pattern(root, i), "broadcast, element ", i);

    std::vector<T> mine(n);
    for (std::int64_t i = 0; i < n; ++i) mine[i] = T{pattern(rank, i)};
    std::vector<T> all(n * size);
    comm.all_gather(mine.data(), all.data(), n, this->type);
    std::vector<T> in_place(n * size, T{0x1234});
    std::copy(mine.begin(), mine.end(), in_place.begin() + rank * n);
    comm.all_gather(in_place.data() + rank * n, in_place.data(), n, this->type);
    for (int r = 0; r < size; ++r)
      for (std::int64_t i = 0; i < n; ++i) {
        bits.check(all[r * n + i].bits == pattern(r, i), "all_gather, rank ", r, " element ", i);
        bits.check(in_place[r * n + i].bits == pattern(r, i), "in place, rank ", r, " element ", i);
      }
    EXPECT_EQ(bits.wrong, 0) << bits.first;
  }
}

TYPED_TEST(Collectives16, UnevenReduceScatterAndAllGatherAlsoInPlace) {
  using T = TypeParam;
  for (std::size_t k = 0; k < this->comms.size(); ++k) {
    SCOPED_TRACE(this->mode(k));
    Communicator& comm = *this->comms[k];
    const int rank = comm.rank();
    const int size = comm.size();
    // A range of a flat buffer that cuts the ranks' slices unevenly (rank 0 gets none).
    std::vector<std::int64_t> counts(size);
    for (int r = 0; r < size; ++r) counts[r] = r == 0 && size > 1 ? 0 : 300 + 77 * r;
    const std::int64_t total = std::accumulate(counts.begin(), counts.end(), std::int64_t{0});
    std::int64_t displacement = 0;
    for (int r = 0; r < rank; ++r) displacement += counts[r];

    std::vector<T> send(total);
    for (std::int64_t i = 0; i < total; ++i) send[i] = exactly<T>(exact_value(rank, i));
    std::vector<T> mine(std::max<std::int64_t>(1, counts[rank]));
    comm.reduce_scatter_v(send.data(), mine.data(), counts, this->type, ReduceOp::Sum);
    std::vector<T> buffer = send;  // in place: the result lands at the buffer's start
    comm.reduce_scatter_v(buffer.data(), buffer.data(), counts, this->type, ReduceOp::Sum);
    Tally sums;
    for (std::int64_t i = 0; i < counts[rank]; ++i) {
      float expected = 0;
      for (int r = 0; r < size; ++r) expected += exact_value(r, displacement + i);
      sums.check(to_float(mine[i]) == expected, "element ", i);
      sums.check(to_float(buffer[i]) == expected, "in place, element ", i);
    }
    EXPECT_EQ(sums.wrong, 0) << sums.first;

    auto pattern = [](int r, std::int64_t i) {
      return static_cast<std::uint16_t>(0x3c00 + 37 * r + i);
    };
    std::vector<T> own(std::max<std::int64_t>(1, counts[rank]));
    for (std::int64_t i = 0; i < counts[rank]; ++i) own[i] = T{pattern(rank, i)};
    std::vector<T> gathered(total, T{0xffff});
    comm.all_gather_v(own.data(), gathered.data(), counts, this->type);
    std::vector<T> in_place(total, T{0xffff});
    std::copy(own.begin(), own.begin() + counts[rank], in_place.begin() + displacement);
    comm.all_gather_v(in_place.data() + displacement, in_place.data(), counts, this->type);
    std::int64_t at = 0;
    Tally bits;
    for (int r = 0; r < size; ++r)
      for (std::int64_t i = 0; i < counts[r]; ++i, ++at) {
        bits.check(gathered[at].bits == pattern(r, i), "rank ", r, " element ", i);
        bits.check(in_place[at].bits == pattern(r, i), "in place, rank ", r, " element ", i);
      }
    EXPECT_EQ(bits.wrong, 0) << bits.first;
  }
}

TYPED_TEST(Collectives16, TrafficIsHalfOfTheSameFp32Collective) {
  for (std::size_t k = 0; k < this->comms.size(); ++k) {
    SCOPED_TRACE(this->mode(k));
    Communicator& comm = *this->comms[k];
    const int size = comm.size();
    const std::int64_t per_rank = 1024;
    const std::int64_t n = per_rank * size;
    std::vector<std::int64_t> counts(size);
    for (int r = 0; r < size; ++r) counts[r] = 3 + 2 * r;  // every rank receives some
    // Room for either type: the collectives read and write 4 bytes an element for fp32.
    std::vector<float> send(n, 1.0f), recv(n * size, 0.0f);

    // Runs every collective once in `type`; returns the traffic of each kind.
    auto run = [&](DataType type) {
      comm.reset_traffic();
      std::vector<Traffic> traffic;
      comm.all_reduce(send.data(), recv.data(), n, type, ReduceOp::Sum);
      traffic.push_back(comm.traffic(Collective::AllReduce));
      comm.reduce_scatter(send.data(), recv.data(), per_rank, type, ReduceOp::Sum);
      traffic.push_back(comm.traffic(Collective::ReduceScatter));
      comm.all_gather(send.data(), recv.data(), per_rank, type);
      traffic.push_back(comm.traffic(Collective::AllGather));
      comm.broadcast(recv.data(), n, type, 0);
      traffic.push_back(comm.traffic(Collective::Broadcast));
      comm.reset_traffic();
      comm.reduce_scatter_v(send.data(), recv.data(), counts, type, ReduceOp::Sum);
      traffic.push_back(comm.traffic(Collective::ReduceScatter));
      comm.all_gather_v(send.data(), recv.data(), counts, type);
      traffic.push_back(comm.traffic(Collective::AllGather));
      return traffic;
    };
    const std::vector<Traffic> narrow = run(this->type);
    const std::vector<Traffic> wide = run(DataType::Float32);
    const char* names[] = {"all_reduce", "reduce_scatter",   "all_gather",
                           "broadcast",  "reduce_scatter_v", "all_gather_v"};
    for (std::size_t c = 0; c < narrow.size(); ++c) {
      SCOPED_TRACE(names[c]);
      // (A broadcast on one rank moves nothing and is not counted.)
      EXPECT_EQ(narrow[c].calls, c == 3 && size == 1 ? 0 : 1);
      EXPECT_EQ(2 * narrow[c].bytes_sent, wide[c].bytes_sent);
      EXPECT_EQ(2 * narrow[c].bytes_received, wide[c].bytes_received);
      if (size > 1) {
        EXPECT_GT(narrow[c].bytes_sent + narrow[c].bytes_received, 0);
      }
    }
    // And the ring volume itself, in 2-byte elements.
    EXPECT_EQ(narrow[0].bytes_sent, size > 1 ? 2 * n * 2 * (size - 1) / size : 0);
    EXPECT_EQ(zt::comm::size_of(this->type), 2u);
  }
}

}  // namespace
