// SPDX-License-Identifier: Apache-2.0
// One YAML (or JSON) document per file: what both readers of user files (the DeepSpeed config
// and the model description) need from yaml-cpp beyond YAML::Load, which reads the first
// document and silently drops whatever follows it.
#pragma once

#include <string>

namespace zt::yaml {

/// The line (1-based) where a second document starts in `text` (after "---", or stray text
/// after a flow document such as "{}\n,"), or 0 when the text holds at most one. Throws
/// YAML::Exception when the text does not parse.
///
/// Not YAML::LoadAll: up to yaml-cpp 0.8 it loops forever, allocating without bound, when a
/// stray token follows the document (jbeder/yaml-cpp#1040, fixed upstream by #1319; Debian 12
/// ships 0.7.0), so the parser is asked for two documents at most.
int second_document_line(const std::string& text);

}  // namespace zt::yaml
