// Runs before every test file. Each file starts on TF.js's cpu backend (the reference most tests compute
// on) with TF.js's gradients registered (tfjs-core alone has none), so that a test file need not repeat
// that setup. Files that need another backend select it themselves (`useBackend('wasm')`, or
// `tf.setBackend('wasm')` after importing the wasm backend).
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import * as tf from '@tensorflow/tfjs-core';

// Silences TF.js's one-time "install tfjs-node" notice in test output (its warn() is muted in PROD).
tf.env().set('PROD', true);
await tf.setBackend('cpu');
