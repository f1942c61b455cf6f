# Writes git_revision.hpp with the source tree's revision at build time (not configure time, so
# a rebuild after `git pull` reports the new revision), rewriting it only when it changed.
# -DSOURCE_DIR=... -DOUTPUT=...
execute_process(COMMAND git describe --always --dirty=-modified --abbrev=12
  WORKING_DIRECTORY ${SOURCE_DIR} OUTPUT_VARIABLE revision OUTPUT_STRIP_TRAILING_WHITESPACE
  ERROR_QUIET RESULT_VARIABLE status)
if(NOT status EQUAL 0 OR NOT revision)
  set(revision "unknown")  # a release tarball or a Spack stage has no .git
endif()
set(content "// Generated at build time by app/git_revision.cmake.\n#pragma once\n#define ZT_GIT_REVISION \"${revision}\"\n")
if(EXISTS ${OUTPUT})
  file(READ ${OUTPUT} previous)
endif()
if(NOT "${previous}" STREQUAL "${content}")
  file(WRITE ${OUTPUT} "${content}")
endif()
