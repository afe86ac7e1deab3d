import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import jpeg from 'jpeg-js';
import { DataError } from '@regstack/regularizer';
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { svhnMat, svhnPixel, writeCifarRecords, writeIdx } from './__fixtures__/official-formats.js';
import { channelStatistics } from './normalization.js';
import {
  debianFashionMnistDirectory,
  fashionMnistFiles,
  loadCifar10,
  loadCifar100,
  loadFashionMnist,
  loadSvhn,
  loadTinyImageNet,
  type DownloadProgress,
} from './node.js';

/**
 * The test of Debian's Fashion-MNIST needs the package dataset-fashion-mnist. `.ci/run` installs it,
 * so with `CI` set a missing copy fails the test (a broken install must not pass as a skip);
 * elsewhere the test skips and says why.
 */
function needsDebianFashionMnist(context: TestContext): void {
  const file = join(debianFashionMnistDirectory, 'train-images-idx3-ubyte.gz');
  if (existsSync(file)) return;
  const reason = `no ${file}: install Debian's Fashion-MNIST (apt-get install dataset-fashion-mnist, as .ci/run does)`;
  const ci = process.env['CI'];
  if (ci && ci !== 'false' && ci !== '0') throw new Error(`CI is set, so this test may not skip: ${reason}`);
  console.warn(`SKIPPED Debian Fashion-MNIST test: ${reason}`);
  context.skip(reason);
}

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'regstack-datasets-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Tiny Fashion-MNIST files: 20 training and 10 test images, pixel (i, r, c) = (i + r + c) mod 256. */
function fashionFiles(): Record<string, Uint8Array> {
  const images = (count: number) => {
    const pixels = new Uint8Array(count * 784);
    for (let image = 0; image < count; image++) for (let offset = 0; offset < 784; offset++) pixels[image * 784 + offset] = (image + Math.floor(offset / 28) + (offset % 28)) % 256;
    return writeIdx([count, 28, 28], pixels);
  };
  return {
    [fashionMnistFiles.trainImages]: images(20),
    [fashionMnistFiles.trainLabels]: writeIdx([20], Array.from({ length: 20 }, (_, index) => index % 10)),
    [fashionMnistFiles.testImages]: images(10),
    [fashionMnistFiles.testLabels]: writeIdx([10], Array.from({ length: 10 }, (_, index) => 9 - index)),
  };
}

describe('loadFashionMnist', () => {
  it('reads gzipped and plain IDX files from a directory', async () => {
    const directory = join(root, 'fashion-local');
    await mkdir(directory);
    for (const [index, [stem, bytes]] of Object.entries(fashionFiles()).entries()) {
      // Half gzipped, half not: both forms are official.
      await writeFile(join(directory, index % 2 === 0 ? `${stem}.gz` : stem), index % 2 === 0 ? gzipSync(bytes) : bytes);
    }
    const { train, validation, test, info } = await loadFashionMnist({ directory, validationFraction: 0.2, seed: 4 });
    expect([train.size, validation.size, test.size]).toEqual([16, 4, 10]);
    expect(Array.from(test.labels)).toEqual([9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
    // Test image 3, row 2, column 5 holds 3 + 2 + 5.
    expect(test.images[3 * 784 + 2 * 28 + 5]).toBe(10);
    expect(info.source).toBe(directory);
  });

  it('names the missing directory or files, with a hint', async () => {
    await expect(loadFashionMnist({ directory: join(root, 'nowhere') })).rejects.toThrow(/loadFashionMnist\.directory: .*does not exist.*apt-get install dataset-fashion-mnist/);
    const partial = join(root, 'fashion-partial');
    await mkdir(partial);
    await writeFile(join(partial, `${fashionMnistFiles.trainImages}.gz`), gzipSync(fashionFiles()[fashionMnistFiles.trainImages]!));
    await expect(loadFashionMnist({ directory: partial })).rejects.toThrow(/lacks train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte/);
    await expect(loadFashionMnist({ useSystemCopy: false, cacheDirectory: join(root, 'empty-cache') })).rejects.toThrow(/pass download: true/);
  });

  it('rejects a truncated file by name', async () => {
    const directory = join(root, 'fashion-truncated');
    await mkdir(directory);
    for (const [stem, bytes] of Object.entries(fashionFiles())) {
      await writeFile(join(directory, stem), stem === fashionMnistFiles.testImages ? bytes.subarray(0, 1000) : bytes);
    }
    await expect(loadFashionMnist({ directory })).rejects.toThrow(/fashion-mnist\/test\.images: truncated/);
  });

  it('rejects a corrupt gzip file by name, carrying zlib\'s error as its cause', async () => {
    const directory = join(root, 'fashion-bad-gzip');
    await mkdir(directory);
    for (const [stem, bytes] of Object.entries(fashionFiles())) {
      const gzip = gzipSync(bytes);
      await writeFile(join(directory, `${stem}.gz`), stem === fashionMnistFiles.trainLabels ? gzip.subarray(0, gzip.length - 12) : gzip);
    }
    const error: unknown = await loadFashionMnist({ directory }).catch((thrown: unknown) => thrown);
    expect(DataError.isInstance(error)).toBe(true);
    expect((error as DataError).message).toMatch(/train-labels-idx1-ubyte\.gz is a corrupt or truncated gzip file$/);
    expect((error as DataError).cause).toEqual(expect.objectContaining({ code: 'Z_BUF_ERROR' }));
  });

  describe('download', () => {
    let server: Server;
    let baseUrl: string;
    const served = new Map<string, Uint8Array>();
    const requests: string[] = [];

    beforeAll(async () => {
      server = createServer((request, response) => {
        requests.push(request.url ?? '');
        const body = served.get((request.url ?? '').slice(1));
        if (body === undefined) {
          response.writeHead(404).end();
          return;
        }
        response.writeHead(200, { 'content-length': body.length, 'content-type': 'application/octet-stream' });
        response.end(body);
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    });
    afterAll(async () => {
      await new Promise((resolve) => server.close(resolve));
    });

    const gzipped = Object.fromEntries(Object.entries(fashionFiles()).map(([stem, bytes]) => [`${stem}.gz`, gzipSync(bytes)]));
    const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
    const md5 = (bytes: Uint8Array) => createHash('md5').update(bytes).digest('hex');
    const checksums = {
      trainImages: { sha256: sha256(gzipped[`${fashionMnistFiles.trainImages}.gz`]!) },
      trainLabels: { md5: md5(gzipped[`${fashionMnistFiles.trainLabels}.gz`]!) },
      testImages: { sha256: sha256(gzipped[`${fashionMnistFiles.testImages}.gz`]!) },
      testLabels: { sha256: sha256(gzipped[`${fashionMnistFiles.testLabels}.gz`]!) },
    };

    it('rejects a corrupt file and does not cache it', async () => {
      const cacheDirectory = join(root, 'cache-corrupt');
      for (const [name, bytes] of Object.entries(gzipped)) served.set(name, bytes);
      // A copy: Buffer.slice would share, and corrupt, the good bytes.
      const corrupt = Uint8Array.from(gzipped[`${fashionMnistFiles.testImages}.gz`]!);
      corrupt[corrupt.length - 5]! ^= 0xff;
      served.set(`${fashionMnistFiles.testImages}.gz`, corrupt);
      await expect(
        loadFashionMnist({ download: true, useSystemCopy: false, cacheDirectory, baseUrl, checksums, progress: false }),
      ).rejects.toThrow(/loadFashionMnist\.download\.testImages: .*sha256 is [0-9a-f]{64}, expected [0-9a-f]{64}; the corrupt file was deleted, not cached/);
      const cached = (await readdir(cacheDirectory)).sort();
      // The two files fetched before the corrupt one stay; the corrupt one and any partial file are gone.
      expect(cached).toEqual([`${fashionMnistFiles.trainImages}.gz`, `${fashionMnistFiles.trainLabels}.gz`]);
    });

    it('downloads into the cache with progress, then reads the cache without the network', async () => {
      const cacheDirectory = join(root, 'cache-good');
      for (const [name, bytes] of Object.entries(gzipped)) served.set(name, bytes);
      const progress: DownloadProgress[] = [];
      requests.length = 0;
      const first = await loadFashionMnist({ download: true, useSystemCopy: false, cacheDirectory, baseUrl, checksums, progress: (update) => progress.push(update), validationFraction: 0 });
      expect(requests.sort()).toEqual(Object.keys(gzipped).map((name) => `/${name}`).sort());
      expect(first.train.size).toBe(20);
      expect(first.info.source).toBe(baseUrl);
      const last = progress.filter((update) => update.url.endsWith(`${fashionMnistFiles.trainImages}.gz`)).at(-1)!;
      expect(last.received).toBe(gzipped[`${fashionMnistFiles.trainImages}.gz`]!.length);
      expect(last.total).toBe(last.received);
      requests.length = 0;
      const second = await loadFashionMnist({ useSystemCopy: false, cacheDirectory, validationFraction: 0 });
      expect(requests).toEqual([]);
      expect(Array.from(second.test.images)).toEqual(Array.from(first.test.images));
    });

    it('an unreachable server: the DataError names the address and carries the network error as its cause', async () => {
      // A port nothing listens on: the one the test server had, once closed.
      const closed = createServer();
      await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
      const deadUrl = `http://127.0.0.1:${(closed.address() as AddressInfo).port}/`;
      await new Promise((resolve) => closed.close(resolve));
      const error: unknown = await loadFashionMnist({ download: true, useSystemCopy: false, cacheDirectory: join(root, 'cache-dead'), baseUrl: deadUrl, progress: false }).catch(
        (thrown: unknown) => thrown,
      );
      expect(DataError.isInstance(error)).toBe(true);
      expect((error as DataError).message).toBe(`loadFashionMnist.download.trainImages: cannot reach ${deadUrl}${fashionMnistFiles.trainImages}.gz`);
      const cause = (error as DataError).cause as Error & { cause?: { code?: string } };
      expect(cause).toBeInstanceOf(TypeError); // undici's 'fetch failed', itself caused by the refused connection
      expect(cause.cause?.code).toBe('ECONNREFUSED');
    });

    it('names a missing file', async () => {
      served.clear();
      await expect(loadFashionMnist({ download: true, useSystemCopy: false, cacheDirectory: join(root, 'cache-404'), baseUrl, progress: false })).rejects.toThrow(
        /loadFashionMnist\.download\.trainImages: .*HTTP 404/,
      );
      await expect(loadFashionMnist({ download: true, useSystemCopy: false, cacheDirectory: join(root, 'cache-x'), baseUrl: 'not a url' })).rejects.toThrow(
        expect.objectContaining({ field: 'loadFashionMnist.baseUrl' }),
      );
    });
  });

  it("reads Debian's copy: 60 000 + 10 000 images, mean 0.2860 and std 0.3530", async (context) => {
    needsDebianFashionMnist(context);
    const { train, validation, test, info } = await loadFashionMnist({ validationFraction: 0 });
    expect(info.source).toBe(debianFashionMnistDirectory);
    expect([train.size, validation.size, test.size]).toEqual([60000, 0, 10000]);
    expect(Array.from(train.classCounts())).toEqual(new Array(10).fill(6000));
    const { mean, std } = channelStatistics(train.images, 1, 255);
    expect(mean[0]).toBeCloseTo(0.286, 3);
    expect(std[0]).toBeCloseTo(0.353, 3);
    expect(info.normalization.mean[0]).toBeCloseTo(mean[0]!, 4);
    expect(info.normalization.std[0]).toBeCloseTo(std[0]!, 4);
  });
});

const cifarPixel = (example: number) => (channel: number, row: number, column: number) => (example * 11 + channel * 60 + row * 5 + column) % 256;

describe('loadCifar10 and loadCifar100', () => {
  it('reads the batches of cifar-10-batches-bin', async () => {
    const directory = join(root, 'cifar10', 'cifar-10-batches-bin');
    await mkdir(directory, { recursive: true });
    await writeFile(join(directory, 'data_batch_1.bin'), writeCifarRecords(Array.from({ length: 6 }, (_, example) => ({ labels: [example], pixel: cifarPixel(example) }))));
    await writeFile(join(directory, 'data_batch_2.bin'), writeCifarRecords(Array.from({ length: 4 }, (_, example) => ({ labels: [9 - example], pixel: cifarPixel(6 + example) }))));
    await writeFile(join(directory, 'test_batch.bin'), writeCifarRecords([{ labels: [2], pixel: cifarPixel(40) }]));
    const { train, validation, test, info } = await loadCifar10({ directory: join(root, 'cifar10'), validationFraction: 0 });
    expect([train.size, validation.size, test.size]).toEqual([10, 0, 1]);
    expect(Array.from(train.labels)).toEqual([0, 1, 2, 3, 4, 5, 9, 8, 7, 6]);
    // Example 7 (second batch), row 4, column 6, blue.
    expect(train.images[7 * 3072 + (4 * 32 + 6) * 3 + 2]).toBe(cifarPixel(7)(2, 4, 6));
    expect(info.normalization.mean[0]).toBeCloseTo(125.3 / 255, 6);
    await expect(loadCifar10({ directory: join(root, 'missing') })).rejects.toThrow(/loadCifar10\.directory: .*does not exist.*cifar-10-binary\.tar\.gz/);
  });

  it('reads fine or coarse labels, and a seeded training subset', async () => {
    const directory = join(root, 'cifar-100-binary');
    await mkdir(directory, { recursive: true });
    const records = Array.from({ length: 30 }, (_, example) => ({ labels: [example % 20, (example * 3) % 100], pixel: cifarPixel(example) }));
    await writeFile(join(directory, 'train.bin'), writeCifarRecords(records));
    await writeFile(join(directory, 'test.bin'), writeCifarRecords(records.slice(0, 5)));
    await writeFile(join(directory, 'coarse_label_names.txt'), Array.from({ length: 20 }, (_, index) => `super${index}`).join('\n'));
    const fine = await loadCifar100({ directory, validationFraction: 0 });
    expect(fine.info.numClasses).toBe(100);
    expect(fine.train.labels[7]).toBe(21);
    expect(fine.info.classNames).toBeUndefined();
    const coarse = await loadCifar100({ directory, labels: 'coarse', validationFraction: 0 });
    expect(coarse.train.labels[27]).toBe(7);
    expect(coarse.info.classNames?.[7]).toBe('super7');
    const small = await loadCifar100({ directory, trainSize: 12, subsetSeed: 5, validationFraction: 0.25 });
    expect([small.train.size, small.validation.size, small.test.size]).toEqual([9, 3, 5]);
    const again = await loadCifar100({ directory, trainSize: 12, subsetSeed: 5, validationFraction: 0 });
    // The subset is the first 12 of the seeded permutation; fine label = 3·index mod 100 identifies each example.
    const { Random } = await import('@regstack/regularizer');
    const expected = Array.from(new Random(5).permutation(30).subarray(0, 12), (index) => (index * 3) % 100);
    expect(Array.from(again.train.labels)).toEqual(expected);
    expect(again.info.name).toBe('cifar100-12');
    await expect(loadCifar100({ directory, trainSize: 31 })).rejects.toThrow(expect.objectContaining({ field: 'loadCifar100.trainSize' }));
  });
});

describe('loadSvhn', () => {
  it('reads train, test and extra .mat files', async () => {
    const directory = join(root, 'svhn');
    await mkdir(directory);
    await writeFile(join(directory, 'train_32x32.mat'), svhnMat([1, 10, 5], true));
    await writeFile(join(directory, 'test_32x32.mat'), svhnMat([2], false));
    await writeFile(join(directory, 'extra_32x32.mat'), svhnMat([10, 10], true));
    const plain = await loadSvhn({ directory, validationFraction: 0 });
    expect(Array.from(plain.train.labels)).toEqual([1, 0, 5]);
    expect(plain.train.images[(2 * 32 * 32 + 3 * 32 + 8) * 3 + 1]).toBe(svhnPixel(3, 8, 1, 2));
    expect(plain.info.normalization.std[2]).toBeCloseTo(50.8 / 255, 6);
    const extra = await loadSvhn({ directory, includeExtra: true, validationFraction: 0 });
    expect(Array.from(extra.train.labels)).toEqual([1, 0, 5, 0, 0]);
    expect(extra.info.name).toBe('svhn+extra');
    await rm(join(directory, 'test_32x32.mat'));
    await expect(loadSvhn({ directory })).rejects.toThrow(/test_32x32\.mat is missing/);
  });
});

describe('loadTinyImageNet', () => {
  const colours: Record<string, [number, number, number]> = { n01: [200, 30, 30], n02: [20, 40, 220] };
  const solid = ([red, green, blue]: [number, number, number]) => {
    const data = new Uint8Array(64 * 64 * 4);
    for (let pixel = 0; pixel < 64 * 64; pixel++) data.set([red, green, blue, 255], pixel * 4);
    return jpeg.encode({ width: 64, height: 64, data }, 95).data;
  };

  it('decodes the train folders and the labelled validation set', async () => {
    const directory = join(root, 'tiny-imagenet-200');
    await mkdir(join(directory, 'val', 'images'), { recursive: true });
    await writeFile(join(directory, 'wnids.txt'), 'n01\nn02\n');
    await writeFile(join(directory, 'words.txt'), 'n01\tred thing\nn02\tblue thing\nn99\tunused\n');
    for (const wnid of Object.keys(colours)) {
      await mkdir(join(directory, 'train', wnid, 'images'), { recursive: true });
      for (let index = 0; index < 3; index++) await writeFile(join(directory, 'train', wnid, 'images', `${wnid}_${index}.JPEG`), solid(colours[wnid]!));
    }
    await writeFile(join(directory, 'val', 'images', 'val_0.JPEG'), solid(colours.n02!));
    await writeFile(join(directory, 'val', 'images', 'val_1.JPEG'), solid(colours.n01!));
    await writeFile(join(directory, 'val', 'val_annotations.txt'), 'val_0.JPEG\tn02\t0\t0\t63\t63\nval_1.JPEG\tn01\t1\t2\t30\t40\n');
    const { train, test, info } = await loadTinyImageNet({ directory: root, maxPerClass: 2, validationFraction: 0 });
    expect([train.size, test.size]).toEqual([4, 2]);
    expect(Array.from(train.labels)).toEqual([0, 0, 1, 1]);
    expect(Array.from(test.labels)).toEqual([1, 0]);
    expect(info.classNames).toEqual(['red thing', 'blue thing']);
    // JPEG is lossy: a solid colour comes back within a few levels.
    const mean = channelStatistics(test.images.subarray(0, 64 * 64 * 3), 3).mean;
    mean.forEach((value, channel) => expect(Math.abs(value - colours.n02![channel]!)).toBeLessThan(4));
    await writeFile(join(directory, 'val', 'images', 'val_1.JPEG'), new Uint8Array([1, 2, 3]));
    await expect(loadTinyImageNet({ directory })).rejects.toThrow(DataError);
  });
});
