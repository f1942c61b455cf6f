// SPDX-License-Identifier: Apache-2.0
#include "yaml/single_document.hpp"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <sstream>

namespace zt::yaml {
namespace {

// Records where a document's first event is; ignores the rest.
class FirstMark final : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override { note(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t) override { note(mark); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { note(mark); }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                const std::string&) override {
    note(mark);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    note(mark);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    note(mark);
  }
  void OnMapEnd() override {}
  int line() const { return mark_.line + 1; }

 private:
  void note(const YAML::Mark& mark) {
    if (!seen_) mark_ = mark;
    seen_ = true;
  }
  YAML::Mark mark_;
  bool seen_ = false;
};

}  // namespace

int second_document_line(const std::string& text) {
  std::istringstream stream(text);
  YAML::Parser parser(stream);
  FirstMark first;
  FirstMark second;
  if (!parser.HandleNextDocument(first) || !parser.HandleNextDocument(second)) return 0;
  return second.line();
}

}  // namespace zt::yaml
