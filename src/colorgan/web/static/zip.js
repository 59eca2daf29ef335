/* A minimal ZIP writer (store method, CRC-32), enough for "download all".
 *
 * Why store and not deflate: the results are PNG or JPEG, already compressed; deflating them
 * again saves almost nothing and costs time. Why in the browser: the results are already here,
 * so zipping them client-side sends nothing back to the server and keeps no copy there.
 *
 * Format: APPNOTE.TXT (PKWARE) sections 4.3.7 (local header), 4.3.12 (central directory),
 * 4.3.16 (end of central directory). Names are UTF-8 (general purpose flag bit 11).
 * Limits (classic ZIP, no ZIP64): each file and the whole archive under 4 GiB, under 65535 files.
 */
(function (global) {
  'use strict';

  const CRC_TABLE = (function () {
    const table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = (c & 1) ? (0xEDB88320 ^ (c >>> 1)) : (c >>> 1);
      table[n] = c >>> 0;
    }
    return table;
  })();

  /** CRC-32 (IEEE 802.3, as ZIP and PNG use it) of a Uint8Array, as an unsigned integer. */
  function crc32(bytes) {
    let c = 0xFFFFFFFF;
    for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xFF] ^ (c >>> 8);
    return (c ^ 0xFFFFFFFF) >>> 0;
  }

  /** MS-DOS time and date words (2-second resolution, years from 1980). */
  function dosDateTime(d) {
    const year = Math.max(1980, d.getFullYear());
    return {
      time: (d.getHours() << 11) | (d.getMinutes() << 5) | Math.floor(d.getSeconds() / 2),
      date: ((year - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate(),
    };
  }

  const LIMIT = 0xFFFFFFFF;

  /**
   * Build a ZIP archive.
   * @param {{name: string, data: Uint8Array}[]} entries files, in order; names must be unique.
   * @param {Date} [when] modification time written for every entry.
   * @returns {Blob} the archive (application/zip).
   */
  function build(entries, when) {
    const { time, date } = dosDateTime(when || new Date());
    const encoder = new TextEncoder();
    const locals = [];
    const centrals = [];
    let offset = 0;
    let centralSize = 0;
    if (entries.length > 0xFFFF) throw new Error('too many files for one zip (at most 65535)');
    for (const entry of entries) {
      const name = encoder.encode(entry.name);
      const data = entry.data;
      const crc = crc32(data);
      if (data.length >= LIMIT || offset + 30 + name.length + data.length >= LIMIT) {
        throw new Error('the zip would be over 4 GiB; download the photos one by one');
      }
      const local = new DataView(new ArrayBuffer(30));
      local.setUint32(0, 0x04034b50, true); // local file header signature
      local.setUint16(4, 20, true);         // version needed: 2.0
      local.setUint16(6, 0x0800, true);     // flags: UTF-8 names
      local.setUint16(8, 0, true);          // method: store
      local.setUint16(10, time, true);
      local.setUint16(12, date, true);
      local.setUint32(14, crc, true);
      local.setUint32(18, data.length, true); // compressed size
      local.setUint32(22, data.length, true); // uncompressed size
      local.setUint16(26, name.length, true);
      local.setUint16(28, 0, true);          // extra field length
      locals.push(local.buffer, name, data);

      const central = new DataView(new ArrayBuffer(46));
      central.setUint32(0, 0x02014b50, true); // central directory header signature
      central.setUint16(4, 20, true);         // version made by
      central.setUint16(6, 20, true);         // version needed
      central.setUint16(8, 0x0800, true);
      central.setUint16(10, 0, true);
      central.setUint16(12, time, true);
      central.setUint16(14, date, true);
      central.setUint32(16, crc, true);
      central.setUint32(20, data.length, true);
      central.setUint32(24, data.length, true);
      central.setUint16(28, name.length, true);
      central.setUint16(30, 0, true);         // extra
      central.setUint16(32, 0, true);         // comment
      central.setUint16(34, 0, true);         // disk number
      central.setUint16(36, 0, true);         // internal attributes
      central.setUint32(38, 0, true);         // external attributes
      central.setUint32(42, offset, true);    // offset of the local header
      centrals.push(central.buffer, name);
      centralSize += 46 + name.length;
      offset += 30 + name.length + data.length;
    }
    const end = new DataView(new ArrayBuffer(22));
    end.setUint32(0, 0x06054b50, true);       // end of central directory signature
    end.setUint16(4, 0, true);
    end.setUint16(6, 0, true);
    end.setUint16(8, entries.length, true);
    end.setUint16(10, entries.length, true);
    end.setUint32(12, centralSize, true);
    end.setUint32(16, offset, true);
    end.setUint16(20, 0, true);
    return new Blob([...locals, ...centrals, end.buffer], { type: 'application/zip' });
  }

  global.ColorGANZip = Object.freeze({ build, crc32 });
})(window);
