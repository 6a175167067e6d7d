package analytics

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// AppendJSON appends e as one JSON object, exactly as encoding/json
// encodes it (the same field order, names and omitted zero fields), and
// returns the extended buffer. It allocates nothing beyond growing b: the
// pipeline writes every message's events, where encoding/json's
// reflection cost a few per cent of a busy node's CPU.
func (e *Event) AppendJSON(b []byte) []byte {
	b = append(b, `{"type":`...)
	b = appendString(b, e.Type)
	b = append(b, `,"ts_ms":`...)
	b = strconv.AppendInt(b, e.TimeMS, 10)
	if e.Shard != 0 {
		b = append(b, `,"shard":`...)
		b = strconv.AppendInt(b, int64(e.Shard), 10)
	}
	b = appendUint(b, `,"user":`, e.User)
	b = appendUint(b, `,"device":`, uint64(e.Device))
	b = appendUint(b, `,"peer":`, e.Peer)
	b = appendUint(b, `,"group":`, e.Group)
	b = appendUint(b, `,"id":`, e.ID)
	if e.Size != 0 {
		b = append(b, `,"size":`...)
		b = strconv.AppendInt(b, e.Size, 10)
	}
	if e.Count != 0 {
		b = append(b, `,"count":`...)
		b = strconv.AppendInt(b, int64(e.Count), 10)
	}
	return append(b, '}')
}

// appendUint appends the field named by key (with its leading comma) and
// v, unless v is zero.
func appendUint(b []byte, key string, v uint64) []byte {
	if v == 0 {
		return b
	}
	return strconv.AppendUint(append(b, key...), v, 10)
}

// appendString appends s as a JSON string. Event types are short ASCII
// words, written as they are; anything else goes through encoding/json so
// that its escaping (control characters, <, >, &, invalid UTF-8, U+2028)
// stays the standard one.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
