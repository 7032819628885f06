package wire

// Hand-written JSON codecs of the bodies every message crosses (see json.go). Each encoder writes what
// encoding/json would write for the type; each decoder accepts a subset of what encoding/json accepts and reads
// the same values from it (FuzzBodyCodecsAgreeWithEncodingJSON checks both).

func (r SendRequest) jsonSize() int {
	n := 64 + base64Len(r.MessageID) + base64Len(r.Ciphertext)
	for _, d := range r.Recipients {
		n += base64Len(d) + 1
	}
	return n
}

func (r SendRequest) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"message_id":`...)
	dst = appendBytes(dst, r.MessageID)
	dst = append(dst, `,"ciphertext":`...)
	dst = appendBytes(dst, r.Ciphertext)
	dst = append(dst, `,"recipients":`...)
	dst = appendBytesList(dst, r.Recipients)
	return append(dst, '}')
}

var sendRequestFields = []string{"message_id", "ciphertext", "recipients"}

func (r *SendRequest) decodeJSON(data []byte) error {
	return members(data, sendRequestFields, func(k int, val []byte) (err error) {
		switch k {
		case 0:
			r.MessageID, err = jsonBytes(val)
		case 1:
			r.Ciphertext, err = jsonBytes(val)
		case 2:
			r.Recipients, err = jsonBytesList(val)
		}
		return err
	})
}

func (p EnvelopePush) jsonSize() int {
	return 64 + base64Len(p.MessageID) + base64Len(p.SenderDevice) + base64Len(p.Ciphertext)
}

func (p EnvelopePush) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"message_id":`...)
	dst = appendBytes(dst, p.MessageID)
	dst = append(dst, `,"sender_device":`...)
	dst = appendBytes(dst, p.SenderDevice)
	dst = append(dst, `,"ciphertext":`...)
	dst = appendBytes(dst, p.Ciphertext)
	return append(dst, '}')
}

var envelopePushFields = []string{"message_id", "sender_device", "ciphertext"}

func (p *EnvelopePush) decodeJSON(data []byte) error {
	return members(data, envelopePushFields, func(k int, val []byte) (err error) {
		switch k {
		case 0:
			p.MessageID, err = jsonBytes(val)
		case 1:
			p.SenderDevice, err = jsonBytes(val)
		case 2:
			p.Ciphertext, err = jsonBytes(val)
		}
		return err
	})
}

func (e AckEntry) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"message_id":`...)
	dst = appendBytes(dst, e.MessageID)
	dst = append(dst, `,"sender_device":`...)
	dst = appendBytes(dst, e.SenderDevice)
	return append(dst, '}')
}

var ackEntryFields = []string{"message_id", "sender_device"}

func (e *AckEntry) decodeJSON(data []byte) error {
	return members(data, ackEntryFields, func(k int, val []byte) (err error) {
		switch k {
		case 0:
			e.MessageID, err = jsonBytes(val)
		case 1:
			e.SenderDevice, err = jsonBytes(val)
		}
		return err
	})
}

func (a Ack) jsonSize() int { return 96 + 80*len(a.Acks) }

func (a Ack) appendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	sep := func() {
		if dst[len(dst)-1] != '{' {
			dst = append(dst, ',')
		}
	}
	if len(a.MessageID) > 0 {
		dst = append(dst, `"message_id":`...)
		dst = appendBytes(dst, a.MessageID)
	}
	if len(a.SenderDevice) > 0 {
		sep()
		dst = append(dst, `"sender_device":`...)
		dst = appendBytes(dst, a.SenderDevice)
	}
	if len(a.Acks) > 0 {
		sep()
		dst = append(dst, `"acks":[`...)
		for i, e := range a.Acks {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = e.appendJSON(dst)
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

var ackFields = []string{"message_id", "sender_device", "acks"}

func (a *Ack) decodeJSON(data []byte) error {
	return members(data, ackFields, func(k int, val []byte) (err error) {
		switch k {
		case 0:
			a.MessageID, err = jsonBytes(val)
		case 1:
			a.SenderDevice, err = jsonBytes(val)
		case 2:
			a.Acks = nil
			err = elements(val, func(v []byte) error {
				var e AckEntry
				if string(v) != "null" {
					if err := e.decodeJSON(v); err != nil {
						return err
					}
				}
				a.Acks = append(a.Acks, e)
				return nil
			})
			if err == nil && a.Acks == nil && string(val) != "null" {
				a.Acks = []AckEntry{}
			}
		}
		return err
	})
}

func (r RecipientResult) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"device_id":`...)
	dst = appendBytes(dst, r.DeviceID)
	dst = append(dst, `,"status":`...)
	dst = appendString(dst, r.Status)
	if r.Code != 0 {
		dst = append(dst, `,"code":`...)
		dst = appendInt(dst, int64(r.Code))
	}
	if r.Reason != "" {
		dst = append(dst, `,"reason":`...)
		dst = appendString(dst, r.Reason)
	}
	if len(r.Receipts) > 0 {
		dst = append(dst, `,"receipts":`...)
		dst = appendBytesList(dst, r.Receipts)
	}
	return append(dst, '}')
}

var recipientResultFields = []string{"device_id", "status", "code", "reason", "receipts"}

func (r *RecipientResult) decodeJSON(data []byte) error {
	return members(data, recipientResultFields, func(k int, val []byte) (err error) {
		switch k {
		case 0:
			r.DeviceID, err = jsonBytes(val)
		case 1:
			r.Status, err = jsonString(val)
		case 2:
			var n int64
			n, err = jsonInt(val, 64)
			if string(val) != "null" {
				r.Code = Code(n)
			}
		case 3:
			r.Reason, err = jsonString(val)
		case 4:
			r.Receipts, err = jsonBytesList(val)
		}
		return err
	})
}

func (r SendResponse) jsonSize() int {
	n := 16
	for _, x := range r.Results {
		n += 96 + len(x.Reason)
		for _, rc := range x.Receipts {
			n += base64Len(rc) + 1
		}
	}
	return n
}

func (r SendResponse) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"results":`...)
	if r.Results == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '[')
		for i, x := range r.Results {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = x.appendJSON(dst)
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

var sendResponseFields = []string{"results"}

func (r *SendResponse) decodeJSON(data []byte) error {
	return members(data, sendResponseFields, func(_ int, val []byte) error {
		r.Results = nil
		err := elements(val, func(v []byte) error {
			var x RecipientResult
			if string(v) != "null" {
				if err := x.decodeJSON(v); err != nil {
					return err
				}
			}
			r.Results = append(r.Results, x)
			return nil
		})
		if err == nil && r.Results == nil && string(val) != "null" {
			r.Results = []RecipientResult{}
		}
		return err
	})
}
