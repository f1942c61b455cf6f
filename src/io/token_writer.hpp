// SPDX-License-Identifier: Apache-2.0
// Writing token files: the byte-level text converter and a general writer.
//
// Both write to a temporary name next to the output, flush it to disk and rename it into
// place, so a failed or interrupted run never leaves a half-written file under the real name.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace zt::io {

/// How tokens are stored in the file; pick the narrowest that holds the vocabulary.
enum class TokenStorage { kUint8, kUint16, kInt32, kInt64 };

/// Narrowest storage for token ids in [0, vocab_size).
TokenStorage storage_for_vocab(std::int64_t vocab_size);

/// Writes tokens as the 1-D dataset `dataset_name`, chunked and deflate-compressed, with
/// attributes vocab_size, tokenizer and source (the last two only when not empty). Throws
/// IoError when a token does not fit the storage type or the file cannot be written.
void write_token_file(const std::string& output_path, const std::vector<std::int32_t>& tokens,
                      TokenStorage storage, int vocab_size, const std::string& tokenizer = "",
                      const std::string& source = "", const std::string& dataset_name = "tokens");

/// Converts a file of text (any bytes) to tokens, one per byte (vocab 256): a 1-D uint8
/// dataset "tokens" with attributes vocab_size = 256, tokenizer = "bytes", source = the input's
/// file name. Streams the input, so its size is not limited by memory. Throws IoError for a
/// missing, unreadable or empty input and for an output that cannot be written; `zerotrain
/// data from-text IN OUT.h5` calls this.
void text_to_hdf5(const std::string& input_path, const std::string& output_path);

}  // namespace zt::io
