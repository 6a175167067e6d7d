package storage

import (
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// ConnRef names one client connection anywhere in the cluster. It is a
// plain value, so an Op that carries one can cross a node link; equal refs
// are the same connection. The zero ConnRef names no connection.
type ConnRef struct {
	// Node is the number of the node the connection is on (0 on a single
	// node).
	Node uint32
	// Gen is that node's boot generation: a counter the node increments
	// durably at every start, so a ref from before a restart never
	// matches a connection of the new run.
	Gen uint32
	// ID is the connection's number within that boot, never 0.
	ID uint64
}

// IsZero reports whether r names no connection.
func (r ConnRef) IsZero() bool { return r == ConnRef{} }

// Conns resolves connection refs for a shard; the router implements it
// (local refs resolve to the server's connections, remote ones to a proxy
// over the node link). Endpoint returns nil for a connection that is gone
// or unknown: the shard then drops the call, as a closed connection would.
// Endpoint is called from the actor and the syncer; it must not block and
// should not allocate.
type Conns interface {
	Endpoint(ref ConnRef) Endpoint
}

// Endpoint is a shard's handle on one client connection: where answers and
// inbox entries for that connection go. The server implements it for its
// own connections; a remote proxy implements it by sending each call over
// the node link (docs/cluster.md, "Remote endpoints"), so every argument is
// a plain value.
// Every method may be called from any goroutine, must not block, and must
// tolerate being called after the connection closed (it then does nothing
// and Post reports false).
type Endpoint interface {
	// Post queues encoded frames for the connection; it copies frames. It
	// reports false when the connection is gone or refused the bytes (over
	// its outbound limit, and now closing with SLOW_CONSUMER). The shard
	// does not depend on the result.
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
	// LookupPart answers one shard's part of a LOOKUP of the connection,
	// which the server numbered lookup (OpLookup's Seq): the contacts
	// found among the phones that shard owns (nil: none, or the part
	// failed). The server merges the parts and replies once all have
	// arrived. found is the callee's to keep.
	LookupPart(lookup uint64, found []*pb.Contact)
}

// OpKind says what an Op asks its shard to do.
type OpKind uint8

// Op kinds. Each names the Op fields it reads.
const (
	_ OpKind = iota
	// OpSend: From, FromDevice, User (the recipient), CMID, Type, Cipher,
	// Body or Envelopes, Conn. Answers Sent or Error{cmid}. With Envelopes
	// it runs first on the sender's shard (Slot), then on the
	// recipient's.
	OpSend
	// OpAck: User, Device, Seq, Conn (the acking session).
	OpAck
	// OpRead: User (whose messages were read), From (the reader), UpTo,
	// RID, Conn. Answers Ok.
	OpRead
	// OpLogin: User, Device, Credential, Seq (the client's cursor), Conn.
	OpLogin
	// OpLogout: User, Device, Conn, CMID (the highest Send.cmid the
	// connection read, 0 if none). The connection closed. With Device 0
	// (and CMID 0) it only lowers Conn's order barriers on the shard of
	// User, there a user or group the connection sent a SEND to.
	OpLogout
	// OpRequestCode: Phone, RID, Conn. Answers CodeSent.
	OpRequestCode
	// OpVerify: Phone, Code, Name, RID, Conn. Answers Registered.
	OpVerify
	// OpLookup: Phones (all of this shard), Seq (the gateway server's
	// number for the lookup), Conn. Answers Conn's LookupPart.
	OpLookup
	// OpForward: Source, Dest, OutSeq, Entry. An entry of shard Source's
	// outbox towards shard Dest (outbox.go).
	OpForward
	// OpForwardDone: Source, Dest, OutSeq, Flags. Shard Source applied
	// everything of shard Dest's outbox towards it up to OutSeq; FlagGap:
	// it received an entry beyond the next it expected.
	OpForwardDone

	// OpLinkRequest: Code (its slot picks the shard), Name, RID, Conn (the
	// companion). Answers LinkCode; the companion waits for Linked.
	OpLinkRequest
	// OpLinkApprove: Code, User, Device (the approving device), RID, Conn.
	OpLinkApprove
	// OpLinkDevice: User, Device (approver), Name, RID, Conn, Companion,
	// CompanionRID. Creates the companion on the user's shard. Internal.
	OpLinkDevice
	// OpDevices: User, RID, Conn. Answers DeviceList.
	OpDevices
	// OpRevokeDevice: User, Device (requester), Target, RID, Conn. Answers Ok.
	OpRevokeDevice

	// OpSubscribe: User, Device (the subscriber), Users (its contacts),
	// RID, Conn. Records the device's contacts; answers Ok.
	OpSubscribe
	// OpWatch: User (the watched), From (the watcher), Conn. Internal.
	OpWatch
	// OpUnwatch: User (the watched), Conn. Internal.
	OpUnwatch
	// OpSetPrivacy: User, Visibility, RID, Conn. Answers Ok.
	OpSetPrivacy
	// OpTyping: User (the target) or Group, From, TypingState. Ephemeral.
	OpTyping

	// OpGroupCreate: User (the creator), Name, Body (avatar), Users, RID, Conn.
	// Runs on the creator's shard, which becomes the group's. Answers
	// GroupInfo.
	OpGroupCreate
	// OpGroupUpdate: Group, User (the actor), GroupOp, Users, Name, Body
	// (avatar), RID, Conn. Answers GroupInfo (ADD) or Ok.
	OpGroupUpdate
	// OpGroupGet: Group, User, RID, Conn. Answers GroupInfo.
	OpGroupGet
	// OpGroupList: User, RID, Conn. Answers GroupListResult.
	OpGroupList
	// OpGroupJoin: User (to add), Group, Source. Internal: asks the user's
	// shard whether the user may join one more group.
	OpGroupJoin
	// OpGroupJoined: Group, User, Code (0: may join). Internal answer.
	OpGroupJoined

	// OpKeysPublish: User, Device (the publishing device), Keys, RID, Conn.
	// Answers Ok (shard_keys.go).
	OpKeysPublish
	// OpKeysFetch: User (whose bundles), From (the asking user), Devices
	// (only these; nil: all), RID, Conn. Answers KeyBundles.
	OpKeysFetch
	// OpRevoke: User (the recipient) or Group, From (the revoker), UpTo
	// (the message id), RID, Conn. Deletes a message for everyone on the
	// recipient's or the group's shard; answers Ok.
	OpRevoke
	// OpBlock, OpUnblock: User (the blocker), Peer (the user blocked),
	// RID, Conn. Answers Ok.
	OpBlock
	OpUnblock
	// OpBlockList: User, RID, Conn. Answers BlockListResult.
	OpBlockList
	// OpSetTimer: User (the other user of the 1:1 conversation) or Group,
	// From (the setter), TTL, RID, Conn. Answers Ok.
	OpSetTimer
	// OpConnGone: Conn names a node and one of its boot generations (ID
	// 0): every connection of that node with a generation up to Conn.Gen
	// is gone (the node left the cluster, or restarted). The shard ends
	// their sessions and presence watches, closes the connections with
	// SHUTTING_DOWN in case the node still serves them, and forwards its
	// outbox's unconfirmed entries again at once (the shards the node
	// served may have lost them). Internal: the router submits it to its
	// local shards.
	OpConnGone

	opKindEnd // one past the last kind: add new kinds above
)

// known reports whether k is a kind this build applies.
func (k OpKind) known() bool {
	return k > 0 && k < opKindEnd || k == OpPushRegister || k == OpPushDone
}

// Op flags.
const (
	// FlagCompanions: append the entry only if the user has more than one
	// active device (copies of a user's own actions for its other devices).
	FlagCompanions uint8 = 1 << iota
)

// FlagTypingChecked marks a 1:1 OpTyping that the sender's shard let
// through (shard_block.go): it goes to the target's shard. One without it
// goes to the sender's shard first (router.SlotOf).
const FlagTypingChecked uint8 = 1 << 6

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
	Conn         ConnRef // the connection the op is from or for
	Companion    ConnRef // OpLinkDevice: the waiting companion
}
