package server

import (
	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// lookupMerge gathers the parts of one LOOKUP: each shard that owns some
// of its phone numbers answers its part to the connection (LookupPart),
// and the last part sends the one LOOKUP_RESULT. A connection's lookups
// in progress are a list (rarely more than one), so an idle connection
// spends one pointer on them.
type lookupMerge struct {
	id       uint64 // the server's number for the lookup (Op.Seq)
	rid      uint32
	parts    int // parts still to come
	contacts []*pb.Contact
	next     *lookupMerge
}

// LookupPart implements storage.Endpoint: it adds one shard's part to the
// lookup and replies once every part has arrived. A part for a lookup the
// connection does not know (answered already) is dropped.
func (c *conn) LookupPart(lookup uint64, found []*pb.Contact) {
	c.mu.Lock()
	link := &c.lookups
	for *link != nil && (*link).id != lookup {
		link = &(*link).next
	}
	m := *link
	if m == nil {
		c.mu.Unlock()
		return
	}
	m.contacts = append(m.contacts, found...)
	if m.parts--; m.parts > 0 {
		c.mu.Unlock()
		return
	}
	*link = m.next
	c.mu.Unlock()
	b, err := codec.AppendProto(nil, protocol.KindLookupResult, &pb.LookupResult{Rid: m.rid, Contacts: m.contacts})
	if err != nil {
		b = codec.AppendError(nil, protocol.CodeInternal, m.rid, 0, "", 0)
	}
	c.Reply(b)
}

// startLookup records a lookup of parts parts and returns its number.
func (c *conn) startLookup(rid uint32, parts int) uint64 {
	id := c.srv.lookupIDs.Add(1)
	c.mu.Lock()
	c.lookups = &lookupMerge{id: id, rid: rid, parts: parts, next: c.lookups}
	c.mu.Unlock()
	return id
}
