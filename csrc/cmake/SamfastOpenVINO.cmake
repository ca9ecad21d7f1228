# samfast_find_openvino(): defines the imported target samfast::openvino, the OpenVINO runtime
# (C++ API), by default the one inside the openvino wheel of SAMFAST_PYTHON: headers in
# openvino/include, libraries in openvino/libs (libopenvino.so.<version>, its CPU plugin, TBB).
#
# Inputs (cache): SAMFAST_OPENVINO_ROOT (a folder with include/openvino/openvino.hpp and
# libs/libopenvino.so*), else SAMFAST_PYTHON's openvino package, else find_package(OpenVINO) (an
# OpenVINO install, e.g. OpenVINO_DIR). Outputs: samfast::openvino, SAMFAST_OPENVINO_LIBDIR.

function(samfast_find_openvino)
  set(root "${SAMFAST_OPENVINO_ROOT}")
  if(NOT root AND SAMFAST_PYTHON)
    execute_process(
      COMMAND "${SAMFAST_PYTHON}" -c "import os, openvino; print(os.path.dirname(openvino.__file__))"
      OUTPUT_VARIABLE root OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE failed ERROR_QUIET)
    if(failed)
      set(root "")
    endif()
  endif()
  add_library(samfast::openvino INTERFACE IMPORTED GLOBAL)
  if(root AND EXISTS "${root}/include/openvino/openvino.hpp")
    file(GLOB candidates "${root}/libs/libopenvino.so.*" "${root}/libs/libopenvino.so")
    list(SORT candidates)
    list(LENGTH candidates count)
    if(count EQUAL 0)
      message(FATAL_ERROR "OpenVINO at ${root} has headers but no libs/libopenvino.so*")
    endif()
    list(GET candidates 0 library)
    target_include_directories(samfast::openvino SYSTEM INTERFACE "${root}/include")
    target_link_libraries(samfast::openvino INTERFACE "${library}")
    set(SAMFAST_OPENVINO_LIBDIR "${root}/libs" PARENT_SCOPE)
    message(STATUS "OpenVINO: ${library}")
    return()
  endif()
  find_package(OpenVINO QUIET COMPONENTS Runtime)
  if(NOT OpenVINO_FOUND)
    message(FATAL_ERROR
      "OpenVINO not found. Pass -DSAMFAST_PYTHON=/path/to/python (a Python with the openvino wheel: "
      "pip install openvino), or -DSAMFAST_OPENVINO_ROOT=<folder with include/ and libs/>, or "
      "-DOpenVINO_DIR=<folder with OpenVINOConfig.cmake>.")
  endif()
  target_link_libraries(samfast::openvino INTERFACE openvino::runtime)
  get_target_property(location openvino::runtime LOCATION)
  get_filename_component(libdir "${location}" DIRECTORY)
  set(SAMFAST_OPENVINO_LIBDIR "${libdir}" PARENT_SCOPE)
  message(STATUS "OpenVINO ${OpenVINO_VERSION}: ${location}")
endfunction()
