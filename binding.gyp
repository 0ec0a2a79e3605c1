{
  "targets": [
    {
      "target_name": "edgemesh_native",
      "sources": ["<!@(ls -1 native/*/*.cc)"],
      "include_dirs+": ["<!(sh native/openssl-include.sh build/openssl-include)"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "native"],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++20"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
      "libraries": [
        "<!@(pkg-config --libs libip4tc libip6tc libnftnl libmnl)",
        "<!(pkg-config --variable=libdir openssl)/libssl.a",
        "<!(pkg-config --variable=libdir openssl)/libcrypto.a",
        "-ldl", "-pthread"
      ],
      "ldflags": ["-Wl,--exclude-libs,libssl.a:libcrypto.a"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "conditions": [
        ["\"<!(echo $EDGEMESH_SANITIZE)\"==\"1\"", {
          "cflags": ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"],
          "cflags_cc": ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"],
          "ldflags": ["-fsanitize=address,undefined"]
        }]
      ]
    }
  ]
}
