package router

import "github.com/parley-im/parley/storage"

// SlotOf returns the slot whose shard runs op: the routing decision for
// every kind of op. OpForward and OpForwardDone name their shard instead
// (Dest). A lookup goes to the slot of its first phone number: the server
// splits lookups by shard.
func SlotOf(op *storage.Op) uint16 {
	switch op.Kind {
	case storage.OpRequestCode, storage.OpVerify:
		return storage.SlotOfPhone(op.Phone)
	case storage.OpLookup:
		if len(op.Phones) > 0 {
			return storage.SlotOfPhone(op.Phones[0])
		}
	case storage.OpLinkRequest, storage.OpLinkApprove:
		slot, _ := storage.LinkCodeSlot(op.Code)
		return slot
	case storage.OpGroupUpdate, storage.OpGroupGet, storage.OpGroupJoined:
		return storage.SlotOfUser(op.Group)
	case storage.OpSend, storage.OpTyping, storage.OpRevoke, storage.OpSetTimer:
		if op.Group != 0 && op.User == 0 {
			return storage.SlotOfUser(op.Group)
		}
		if op.Envelopes != nil && !op.Envelopes.OwnChecked {
			return storage.SlotOfUser(op.From) // the sender's devices are checked first
		}
		if op.Kind == storage.OpTyping && op.Flags&storage.FlagTypingChecked == 0 {
			return storage.SlotOfUser(op.From) // the sender's blocks first ([S-18-6])
		}
	}
	return storage.SlotOfUser(op.User)
}
