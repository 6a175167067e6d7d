// Package pb is the Go code generated from protocol/*.proto by
// protoc-gen-go (run `go generate ./protocol`; never edit the .pb.go
// files). spec.md says what every message means on the wire.
//
// Threading: as for all generated protobuf messages, a message may be read
// from several goroutines at once but must not be modified while it is.
package pb
