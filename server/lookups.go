package server

import (
	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// lookupMerge gathers the parts of one LOOKUP: each shard that owns some
// of its phone numbers answers its part to the connection (LookupPart),
// and the last part sends the one LOOKUP_RESULT.
type lookupMerge struct {
	id       uint64 // the connection's number for the lookup (Op.Seq)
	rid      uint32
	parts    int // parts still to come
	contacts []*pb.Contact
}

// LookupPart implements storage.Endpoint: it adds one shard's part to the
// lookup and replies once every part has arrived. A part for a lookup the
// connection does not know (answered already) is dropped.
func (c *conn) LookupPart(lookup uint64, found []*pb.Contact) {
	c.mu.Lock()
	i := 0
	for i < len(c.lookups) && c.lookups[i].id != lookup {
		i++
	}
	if i == len(c.lookups) {
		c.mu.Unlock()
		return
	}
	m := &c.lookups[i]
	m.contacts = append(m.contacts, found...)
	if m.parts--; m.parts > 0 {
		c.mu.Unlock()
		return
	}
	rid, contacts := m.rid, m.contacts
	last := len(c.lookups) - 1
	c.lookups[i] = c.lookups[last]
	c.lookups[last] = lookupMerge{}
	if c.lookups = c.lookups[:last]; last == 0 {
		c.lookups = nil
	}
	c.mu.Unlock()
	b, err := codec.AppendProto(nil, protocol.KindLookupResult, &pb.LookupResult{Rid: rid, Contacts: contacts})
	if err != nil {
		b = codec.AppendError(nil, protocol.CodeInternal, rid, 0, "", 0)
	}
	c.Reply(b)
}

// startLookup records a lookup of parts parts and returns its number.
// Loop only.
func (c *conn) startLookup(rid uint32, parts int) uint64 {
	c.lookupsRead++
	id := uint64(c.lookupsRead)
	c.mu.Lock()
	c.lookups = append(c.lookups, lookupMerge{id: id, rid: rid, parts: parts})
	c.mu.Unlock()
	return id
}
