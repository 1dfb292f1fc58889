// The user's stream over /ws, delivered as PROTOCOL.md asks a v2 client to:
// - Regist with the login token, resuming after lastSeq (kept in localStorage per user; each
//   tab keeps its own in memory, and the page is rebuilt over HTTP when it loads);
// - every entry is handled once, in seq order, then acknowledged;
// - every message gets an id and stays in an outbox (localStorage) until its Ack, and is
//   sent again with the same id after a reconnect, so a retry is never stored twice;
// - a connection that drops is made again, with back-off.

const PING_EVERY = 25_000; // also keeps the server's idle timeout away
const PONG_WITHIN = 10_000;
const RETRY_RATE_LIMITED = 2_000;
const ACK_DELAY = 150;

// Error codes after which a message is given up (it was refused, not lost).
const FINAL = new Set(['not_friends', 'not_member', 'bad_packet', 'too_large', 'sender_mismatch']);

export function newId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export class Stream {
  // handlers: entry(packet), live(packet), ack(ack, message), failed(message, error), error(error),
  // state('connecting'|'online'|'offline'), unauthorized()
  constructor(user, token, handlers) {
    this.user = user;
    this.token = token;
    this.on = handlers;
    this.key = `imchat.${user}`;
    const stored = localStorage.getItem(`${this.key}.lastSeq`);
    this.lastSeq = stored === null ? null : Number(stored);
    this.ws = null;
    this.attempt = 0;
    this.stopped = false;
    this.registered = false;
    this.timers = {};
    this.onOnline = () => this.reconnectNow();
    window.addEventListener('online', this.onOnline);
    this.connect();
  }

  // Messages not yet acknowledged, oldest first.
  outbox() {
    try {
      return JSON.parse(localStorage.getItem(`${this.key}.outbox`) || '[]');
    } catch {
      return [];
    }
  }

  saveOutbox(list) {
    localStorage.setItem(`${this.key}.outbox`, JSON.stringify(list));
  }

  connect() {
    if (this.stopped) return;
    this.on.state('connecting');
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${scheme}//${location.host}/ws`);
    this.ws = ws;
    this.registered = false;
    ws.onopen = () => {
      const regist = { type: 'Regist', version: 2, sender: this.user, token: this.token };
      if (this.lastSeq !== null) regist.lastSeq = this.lastSeq;
      ws.send(JSON.stringify(regist));
    };
    ws.onmessage = (e) => {
      let packet;
      try {
        packet = JSON.parse(e.data);
      } catch {
        return;
      }
      this.receive(packet);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.registered = false;
      clearInterval(this.timers.ping);
      clearTimeout(this.timers.pong);
      if (this.stopped) return;
      if (e.code === 1008) {
        // The token was refused: only logging in again helps.
        this.stop();
        this.on.unauthorized();
        return;
      }
      this.on.state('offline');
      const delay = Math.min(15_000, 500 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
      this.attempt += 1;
      this.timers.retry = setTimeout(() => this.connect(), delay);
    };
  }

  reconnectNow() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.timers.retry);
    this.connect();
  }

  receive(p) {
    switch (p.type) {
      case 'Registered':
        this.registered = true;
        this.attempt = 0;
        this.on.state('online');
        this.timers.ping = setInterval(() => this.ping(), PING_EVERY);
        clearTimeout(this.timers.resend);
        this.timers.resend = null;
        for (const m of this.outbox()) this.write(m);
        break;
      case 'Message':
      case 'Event':
        if (typeof p.seq !== 'number') break;
        if (this.lastSeq !== null && p.seq <= this.lastSeq) break; // had it already
        this.on.entry(p);
        this.lastSeq = p.seq;
        this.scheduleAck();
        break;
      case 'Ack':
        if (p.id) {
          const outbox = this.outbox();
          const message = outbox.find((m) => m.id === p.id);
          this.saveOutbox(outbox.filter((m) => m.id !== p.id));
          // Another tab may have had it acknowledged already.
          if (message) this.on.ack(p, message);
        }
        break;
      case 'Error':
        this.refused(p);
        break;
      case 'Pong':
        clearTimeout(this.timers.pong);
        break;
      case 'Typing':
      case 'Presence':
        this.on.live(p);
        break;
      default:
        break;
    }
  }

  refused(error) {
    const message = error.id && this.outbox().find((m) => m.id === error.id);
    if (!message) {
      this.on.error(error);
      return;
    }
    if (FINAL.has(error.code)) {
      this.saveOutbox(this.outbox().filter((m) => m.id !== error.id));
      this.on.failed(message, error);
      return;
    }
    // Refused for now (rate_limited, unavailable): said, and the outbox sent again shortly,
    // in order; new messages wait for it.
    this.on.error(error);
    if (this.timers.resend) return;
    this.timers.resend = setTimeout(() => {
      this.timers.resend = null;
      for (const m of this.outbox()) this.write(m);
    }, RETRY_RATE_LIMITED);
  }

  scheduleAck() {
    if (this.timers.ack) return;
    this.timers.ack = setTimeout(() => this.ack(), ACK_DELAY);
  }

  // Everything up to lastSeq is shown: remembered here, and told to the server.
  ack() {
    clearTimeout(this.timers.ack);
    this.timers.ack = null;
    const seq = this.lastSeq;
    if (seq === null) return;
    const stored = Number(localStorage.getItem(`${this.key}.lastSeq`) || 0);
    localStorage.setItem(`${this.key}.lastSeq`, String(Math.max(stored, seq)));
    this.write({ type: 'Ack', seq });
  }

  ping() {
    this.write({ type: 'Ping' });
    clearTimeout(this.timers.pong);
    // No answer: the connection is dead even if the browser has not noticed.
    this.timers.pong = setTimeout(() => this.ws && this.ws.close(), PONG_WITHIN);
  }

  write(packet) {
    if (this.ws && this.registered && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(packet));
      return true;
    }
    return false;
  }

  // A new message to `receiver` (a user id, or a group id "g12"): kept until acknowledged.
  send(receiver, text) {
    const message = {
      type: 'Message',
      id: newId(),
      sender: this.user,
      receiver,
      message: text,
      createTime: Date.now() / 1000,
    };
    this.saveOutbox([...this.outbox(), message]);
    if (!this.timers.resend) this.write(message);
    return message;
  }

  typing(receiver) {
    this.write({ type: 'Typing', receiver });
  }

  read(peer, seq) {
    this.write({ type: 'Read', peer, seq });
  }

  stop() {
    if (this.timers.ack) this.ack();
    this.stopped = true;
    for (const t of Object.values(this.timers)) {
      clearTimeout(t);
      clearInterval(t);
    }
    window.removeEventListener('online', this.onOnline);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000);
    }
  }
}
