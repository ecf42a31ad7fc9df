/**
 * The BroadcastChannel `tokenstile` that same-origin tabs talk over.
 *
 * @module tokenstile/tab-channel
 */

const CHANNEL_NAME = 'tokenstile';

/** A BroadcastChannel whose posts never throw, and that may be closed at any time. */
export class TabChannel {
  #channel;

  /**
   * @param {BroadcastChannel} channel
   * @param {(message: unknown) => void} onMessage called with each message's data
   */
  constructor(channel, onMessage) {
    this.#channel = channel;
    this.#channel.onmessage = (event) => onMessage(event.data);
  }

  /**
   * The origin's channel.
   * @param {(message: unknown) => void} onMessage called with each message's data
   * @returns {TabChannel | null} `null` where the browser has no BroadcastChannel
   */
  static open(onMessage) {
    if (typeof BroadcastChannel !== 'function') return null;
    return new TabChannel(new BroadcastChannel(CHANNEL_NAME), onMessage);
  }

  /**
   * Send `message` to the other tabs; nothing happens once closed.
   * @param {object} message
   */
  post(message) {
    try {
      this.#channel?.postMessage(message);
    } catch {
      // A closed channel: this tab is going away.
    }
  }

  /** Stop sending and receiving. */
  close() {
    this.#channel?.close();
    this.#channel = null;
  }
}
