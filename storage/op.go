package storage

import (
	"sync"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// Endpoint is a shard's handle on one client connection: where answers and
// inbox entries for that connection go. The server implements it.
// Every method may be called from any goroutine, must not block, and must
// tolerate being called after the connection closed (it then does nothing
// and Post reports false).
type Endpoint interface {
	// Post queues encoded frames for the connection; it copies frames. It
	// reports false when the connection is gone or refused the bytes (over
	// its outbound limit, and now closing with SLOW_CONSUMER).
	Post(frames []byte) bool
	// Reply is Post for the answer to a request the connection submitted;
	// it also ends that request's in-flight count.
	Reply(frames []byte)
	// Authenticated answers the connection's Login: it moves the
	// connection to the authenticated state and queues LoginOk, ahead of
	// any entry the shard posts next. It ends the Login's in-flight count.
	Authenticated(s Session)
	// Fail ends one in-flight request and closes the connection with the
	// connection-scope code: an Error frame, a flush, then close.
	Fail(code protocol.Code)
	// Close closes the connection with a connection-scope code, as Fail
	// does, for a connection with no request in flight to end.
	Close(code protocol.Code)
}

// OpKind says what an Op asks its shard to do.
type OpKind uint8

// Op kinds. Each names the Op fields it reads.
const (
	_ OpKind = iota
	// OpSend: From, FromDevice, User (the recipient), CMID, Type, Cipher,
	// Body or Envelopes, EP. Answers Sent or Error{cmid}. With Envelopes
	// it runs first on the sender's shard (Slot), then on the
	// recipient's.
	OpSend
	// OpAck: User, Device, Seq, EP (the acking session).
	OpAck
	// OpRead: User (whose messages were read), From (the reader), UpTo,
	// RID, EP. Answers Ok.
	OpRead
	// OpLogin: User, Device, Credential, Seq (the client's cursor), EP.
	OpLogin
	// OpLogout: User, Device, EP, CMID (the highest Send.cmid the
	// connection read, 0 if none). The connection closed.
	OpLogout
	// OpRequestCode: Phone, RID, EP. Answers CodeSent.
	OpRequestCode
	// OpVerify: Phone, Code, Name, RID, EP. Answers Registered.
	OpVerify
	// OpLookup: Phones (all of this shard), Lookup. The Lookup answers.
	OpLookup
	// OpForward: Source, Dest, OutSeq, Entry. An entry of shard Source's
	// outbox towards shard Dest (outbox.go).
	OpForward
	// OpForwardDone: Source, Dest, OutSeq, Flags. Shard Source applied
	// everything of shard Dest's outbox towards it up to OutSeq; FlagGap:
	// it received an entry beyond the next it expected.
	OpForwardDone

	// OpLinkRequest: Code (its slot picks the shard), Name, RID, EP (the
	// companion). Answers LinkCode; the EP waits for Linked.
	OpLinkRequest
	// OpLinkApprove: Code, User, Device (the approving device), RID, EP.
	OpLinkApprove
	// OpLinkDevice: User, Device (approver), Name, RID, EP, Companion,
	// CompanionRID. Creates the companion on the user's shard. Internal.
	OpLinkDevice
	// OpDevices: User, RID, EP. Answers DeviceList.
	OpDevices
	// OpRevokeDevice: User, Device (requester), Target, RID, EP. Answers Ok.
	OpRevokeDevice

	// OpSubscribe: User, Device (the subscriber), Users (its contacts),
	// RID, EP. Records the device's contacts; answers Ok.
	OpSubscribe
	// OpWatch: User (the watched), From (the watcher), EP. Internal.
	OpWatch
	// OpUnwatch: User (the watched), EP. Internal.
	OpUnwatch
	// OpSetPrivacy: User, Visibility, RID, EP. Answers Ok.
	OpSetPrivacy
	// OpTyping: User (the target) or Group, From, TypingState. Ephemeral.
	OpTyping

	// OpGroupCreate: User (the creator), Name, Body (avatar), Users, RID, EP.
	// Runs on the creator's shard, which becomes the group's. Answers
	// GroupInfo.
	OpGroupCreate
	// OpGroupUpdate: Group, User (the actor), GroupOp, Users, Name, Body
	// (avatar), RID, EP. Answers GroupInfo (ADD) or Ok.
	OpGroupUpdate
	// OpGroupGet: Group, User, RID, EP. Answers GroupInfo.
	OpGroupGet
	// OpGroupList: User, RID, EP. Answers GroupListResult.
	OpGroupList
	// OpGroupJoin: User (to add), Group, Source. Internal: asks the user's
	// shard whether the user may join one more group.
	OpGroupJoin
	// OpGroupJoined: Group, User, Code (0: may join). Internal answer.
	OpGroupJoined

	// OpKeysPublish: User, Device (the publishing device), Keys, RID, EP.
	// Answers Ok (shard_keys.go).
	OpKeysPublish
	// OpKeysFetch: User (whose bundles), From (the asking user), Devices
	// (only these; nil: all), RID, EP. Answers KeyBundles.
	OpKeysFetch
	// OpRevoke: User (the recipient) or Group, From (the revoker), UpTo
	// (the message id), RID, EP. Deletes a message for everyone on the
	// recipient's or the group's shard; answers Ok.
	OpRevoke
	// OpBlock, OpUnblock: User (the blocker), Peer (the user blocked),
	// RID, EP. Answers Ok.
	OpBlock
	OpUnblock
	// OpBlockList: User, RID, EP. Answers BlockListResult.
	OpBlockList
	// OpSetTimer: User (the other user of the 1:1 conversation) or Group,
	// From (the setter), TTL, RID, EP. Answers Ok.
	OpSetTimer
)

// Op flags.
const (
	// FlagCompanions: append the entry only if the user has more than one
	// active device (copies of a user's own actions for its other devices).
	FlagCompanions uint8 = 1 << iota
)

// flagTypingChecked marks a 1:1 OpTyping that the sender's shard let
// through (shard_block.go): it goes to the target's shard. One without it
// goes to the sender's shard first.
const flagTypingChecked uint8 = 1 << 6

// Op is one request to a shard. It is a value type so submitting one does
// not allocate; Body, Credential and Entry must be owned by the Op (not
// aliasing a connection's read buffer).
type Op struct {
	Kind         OpKind
	Flags        uint8
	Type         pb.ContentType
	GroupOp      pb.GroupOp
	Visibility   pb.Visibility
	TypingState  pb.TypingState
	ErrCode      protocol.Code // OpGroupJoined
	FromDevice   uint32
	Device       uint32
	Target       uint32 // OpRevokeDevice
	RID          uint32
	CompanionRID uint32
	Source       uint16 // OpForward, OpForwardDone, OpGroupJoin: the sending shard
	Dest         uint16 // OpForward, OpForwardDone: the shard the op is for
	User         uint64
	From         uint64
	Group        uint64
	CMID         uint64
	Seq          uint64
	UpTo         uint64
	OutSeq       uint64
	Body         []byte
	Credential   []byte
	Entry        []byte   // OpForward: kind byte + stored entry body
	Peer         uint64   // OpBlock, OpUnblock: the other user
	TTL          uint32   // OpSetTimer: seconds; 0: off
	Forwarded    uint32   // OpSend: times the content was forwarded ([S-18-11])
	Ref          uint64   // OpSend: the message it replies to, reacts to or edits
	Users        []uint64 // OpForward of a group entry: its recipients here
	Devices      []uint32 // OpKeysFetch: the devices asked for
	Keys         *pb.KeysPublish
	Cipher       pb.Cipher  // OpSend: relayed in the stored message, never read
	Envelopes    *Envelopes // OpSend of per-device ciphertexts (shard_envelopes.go)
	Push         *PushOp    // OpPushRegister, OpPushDone (shard_push.go)
	Phone        string
	Code         string
	Name         string
	Phones       []string
	Lookup       *Lookup
	EP           Endpoint
	Companion    Endpoint // OpLinkDevice: the waiting companion
}

// Slot returns the slot whose shard runs op. OpForward and OpForwardDone
// name their shard instead (Dest).
func (op *Op) Slot() uint16 {
	switch op.Kind {
	case OpRequestCode, OpVerify:
		return SlotOfPhone(op.Phone)
	case OpLookup:
		if len(op.Phones) > 0 {
			return SlotOfPhone(op.Phones[0])
		}
	case OpLinkRequest, OpLinkApprove:
		slot, _ := LinkCodeSlot(op.Code)
		return slot
	case OpGroupUpdate, OpGroupGet, OpGroupJoined:
		return SlotOfUser(op.Group)
	case OpSend, OpTyping, OpRevoke, OpSetTimer:
		if op.Group != 0 && op.User == 0 {
			return SlotOfUser(op.Group)
		}
		if op.Envelopes != nil && !op.Envelopes.OwnChecked {
			return SlotOfUser(op.From) // the sender's devices are checked first
		}
		if op.Kind == OpTyping && op.Flags&flagTypingChecked == 0 {
			return SlotOfUser(op.From) // the sender's blocks first ([S-18-6])
		}
	}
	return SlotOfUser(op.User)
}

// Lookup gathers the answer to one Lookup request across the shards that
// own its phone numbers; the last shard to report replies.
type Lookup struct {
	mu       sync.Mutex
	rid      uint32
	ep       Endpoint
	pending  int // guarded by mu
	contacts []*pb.Contact
}

// NewLookup returns a Lookup that replies to ep once shards shards have
// reported.
func NewLookup(rid uint32, ep Endpoint, shards int) *Lookup {
	return &Lookup{rid: rid, ep: ep, pending: shards}
}

// Done records one shard's contacts and replies when it is the last. The
// shards call it; so does the server, with nil, for a part it could not
// submit.
func (l *Lookup) Done(found []*pb.Contact) {
	l.mu.Lock()
	l.contacts = append(l.contacts, found...)
	l.pending--
	done := l.pending == 0
	l.mu.Unlock()
	if done {
		l.reply()
	}
}

func (l *Lookup) reply() {
	b, err := appendProtoFrame(nil, protocol.KindLookupResult, &pb.LookupResult{Rid: l.rid, Contacts: l.contacts})
	if err != nil {
		l.ep.Reply(appendErrorFrame(nil, protocol.CodeInternal, l.rid, 0))
		return
	}
	l.ep.Reply(b)
}
