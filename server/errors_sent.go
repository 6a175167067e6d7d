package server

import "google.golang.org/protobuf/encoding/protowire"

// errorCode reads the code (field 1) of an Error frame's body without
// decoding the rest; 0 when the body does not start with it (the encoder
// writes fields in order, and a code of 0 is never sent).
func errorCode(body []byte) int {
	num, typ, n := protowire.ConsumeTag(body)
	if n < 0 || num != 1 || typ != protowire.VarintType {
		return 0
	}
	v, m := protowire.ConsumeVarint(body[n:])
	if m < 0 || v > 1<<20 {
		return 0
	}
	return int(v)
}
