// Package codec turns bytes into Parley frames and frames into bytes.
//
// A frame is a header and a body (spec.md section 3):
//
//	+----------------------+-----------+------------------------+
//	| body length          | kind byte | body                   |
//	| uvarint, 1–3 bytes   | C|kind(7) | length bytes           |
//	+----------------------+-----------+------------------------+
//
// The length counts the body only. The kind byte's high bit C says the body
// is a zstd frame holding the real body; its low seven bits are the kind
// (protocol.Kind). The body is a protobuf message of parley.proto, except
// for Batch, whose body is a sequence of whole frames.
//
// Parse checks the declared length against the caller's limit as soon as
// the length is complete, before any of the body is buffered. Decoders
// borrow their input: a body or field slice returned by codec aliases the
// caller's buffer and is valid only as long as that buffer is. Encoders
// append to a caller-owned slice and do not allocate when it has room.
//
// Threading: the functions are pure and safe for concurrent use. A
// Decompressor may be shared by goroutines; a Reader belongs to one
// goroutine.
package codec
