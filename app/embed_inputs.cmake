# Turns the default job's inputs into C++ string constants, so `zerotrain train` works from any
# directory and an installed binary needs no data files. Run at build time (cmake -P).
file(READ ${INPUT_CONFIG} config_text)
file(READ ${INPUT_MODEL} model_text)
file(WRITE ${OUTPUT}.tmp
  "// Generated from inputs/default by app/embed_inputs.cmake.\n"
  "#include \"app/default_inputs.hpp\"\n"
  "namespace zt::app {\n"
  "const char* const kDefaultConfigName = \"inputs/default/ds_config.json\";\n"
  "const char* const kDefaultModelName = \"inputs/default/model.yaml\";\n"
  "const char* const kDefaultConfigText = R\"zt_embed(${config_text})zt_embed\";\n"
  "const char* const kDefaultModelText = R\"zt_embed(${model_text})zt_embed\";\n"
  "}  // namespace zt::app\n")
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different ${OUTPUT}.tmp ${OUTPUT})
