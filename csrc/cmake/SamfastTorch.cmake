# samfast_find_torch(): defines the imported target samfast::torch from a LibTorch install, by
# default the one inside the torch wheel of SAMFAST_PYTHON (torch.utils.cmake_prefix_path).
#
# The wheel's own TorchConfig.cmake is located but not run: for a CUDA build of torch it insists
# on a CUDA toolkit (nvcc, cudart, nvrtc) at configure time, which a program that only links the
# prebuilt libraries does not need. From that config we take the install prefix and the version;
# headers and libraries are read from the same prefix, as TorchConfig.cmake itself does.
#
# Inputs (cache): Torch_DIR (a folder with TorchConfig.cmake), else CMAKE_PREFIX_PATH entries,
# else SAMFAST_PYTHON's torch. Outputs: samfast::torch, SAMFAST_TORCH_VERSION, SAMFAST_TORCH_LIBDIR.

function(_samfast_torch_config_dir out)
  set(candidates)
  if(Torch_DIR)
    list(APPEND candidates "${Torch_DIR}")
  endif()
  foreach(prefix IN LISTS CMAKE_PREFIX_PATH)
    list(APPEND candidates "${prefix}/Torch" "${prefix}/share/cmake/Torch" "${prefix}")
  endforeach()
  foreach(dir IN LISTS candidates)
    if(EXISTS "${dir}/TorchConfig.cmake")
      set(${out} "${dir}" PARENT_SCOPE)
      return()
    endif()
  endforeach()
  if(SAMFAST_PYTHON)
    execute_process(
      COMMAND "${SAMFAST_PYTHON}" -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
      OUTPUT_VARIABLE prefix OUTPUT_STRIP_TRAILING_WHITESPACE
      RESULT_VARIABLE failed ERROR_QUIET)
    if(NOT failed AND EXISTS "${prefix}/Torch/TorchConfig.cmake")
      set(${out} "${prefix}/Torch" PARENT_SCOPE)
      return()
    endif()
  endif()
  set(${out} "" PARENT_SCOPE)
endfunction()

function(samfast_find_torch)
  _samfast_torch_config_dir(config_dir)
  if(NOT config_dir)
    message(FATAL_ERROR
      "LibTorch not found. Pass -DSAMFAST_PYTHON=/path/to/python (a Python with torch installed), "
      "or -DCMAKE_PREFIX_PATH=$(python -c 'import torch; print(torch.utils.cmake_prefix_path)'), "
      "or -DTorch_DIR=<folder with TorchConfig.cmake>.")
  endif()
  get_filename_component(root "${config_dir}/../../.." ABSOLUTE)
  set(version "unknown")
  if(EXISTS "${config_dir}/TorchConfigVersion.cmake")
    file(STRINGS "${config_dir}/TorchConfigVersion.cmake" line REGEX "set\\(PACKAGE_VERSION \"")
    string(REGEX REPLACE ".*PACKAGE_VERSION \"([^\"]*)\".*" "\\1" version "${line}")
  endif()
  foreach(name torch torch_cpu c10)
    find_library(SAMFAST_LIB_${name} NAMES ${name} PATHS "${root}/lib" NO_DEFAULT_PATH)
    if(NOT SAMFAST_LIB_${name})
      message(FATAL_ERROR "LibTorch at ${root} has no lib${name} in ${root}/lib")
    endif()
  endforeach()
  if(NOT EXISTS "${root}/include/torch/script.h")
    message(FATAL_ERROR "LibTorch at ${root} has no include/torch/script.h")
  endif()

  add_library(samfast::torch INTERFACE IMPORTED GLOBAL)
  target_include_directories(samfast::torch SYSTEM INTERFACE
    "${root}/include" "${root}/include/torch/csrc/api/include")
  # libtorch.so itself is a thin library that pulls in torch_cuda (and so the CUDA kernels and
  # devices) when the wheel has them: keep it even though no symbol of it is referenced.
  target_link_libraries(samfast::torch INTERFACE
    "-Wl,--no-as-needed" "${SAMFAST_LIB_torch}" "-Wl,--as-needed" "${SAMFAST_LIB_torch_cpu}" "${SAMFAST_LIB_c10}")
  # Old LibTorch builds came in two C++ ABIs; ask the wheel which one when it is SAMFAST_PYTHON's.
  if(SAMFAST_PYTHON)
    execute_process(
      COMMAND "${SAMFAST_PYTHON}" -c
        "import torch, torch.utils; print(torch.utils.cmake_prefix_path); print(int(torch._C._GLIBCXX_USE_CXX11_ABI))"
      OUTPUT_VARIABLE answer OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE failed ERROR_QUIET)
    string(REPLACE "\n" ";" answer "${answer}")
    list(LENGTH answer count)
    if(NOT failed AND count EQUAL 2)
      list(GET answer 0 prefix)
      list(GET answer 1 abi)
      get_filename_component(prefix "${prefix}/Torch" ABSOLUTE)
      get_filename_component(config_abs "${config_dir}" ABSOLUTE)
      if(prefix STREQUAL config_abs AND abi MATCHES "^[01]$")
        target_compile_definitions(samfast::torch INTERFACE _GLIBCXX_USE_CXX11_ABI=${abi})
      endif()
    endif()
  endif()
  set(SAMFAST_TORCH_VERSION "${version}" PARENT_SCOPE)
  set(SAMFAST_TORCH_LIBDIR "${root}/lib" PARENT_SCOPE)
  message(STATUS "LibTorch ${version}: ${root}")
endfunction()
