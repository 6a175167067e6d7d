package protocol

// The generated code in pb/ is committed. Regenerate it after editing
// parley.proto; the buf and protoc-gen-go versions are pinned here and in
// go.mod, so the output is byte-for-byte reproducible.
//go:generate go run github.com/bufbuild/buf/cmd/buf@v1.75.0 generate
