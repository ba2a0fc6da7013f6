// pm2 ecosystem for a miner and a validator of this subnet (docs/operator.md).
//
//   cp deploy/pm2/neurons.env.example ~/.sparseloco/neurons.env   # then edit it (chmod 600)
//   set -a; . ~/.sparseloco/neurons.env; set +a
//   pm2 start deploy/pm2/ecosystem.config.js                 # both; --only miner or --only validator for one
//   pm2 save && pm2 startup                                  # come back after a reboot
//
// Everything comes from the environment, so this file is used as it is. Storage keys are read by the
// neurons from the credentials file (or S3_* variables), never from the command line: pm2 prints
// command lines in `pm2 show` and `ps` shows them to every user.
// Restarts: a crash restarts after a growing delay; exit status 2 (preflight failed, not registered,
// an upgrade required) stops the process instead of restarting it in a loop - fix what it logged first.
// Exit status 3 (only the chain or the storage did not answer at start) is restarted like a crash.
const path = require("path");

const env = process.env;
const ROOT = env.SPARSELOCO_ROOT || path.resolve(__dirname, "..", "..");
const VENV = env.SPARSELOCO_VENV || path.join(ROOT, ".venv");
const LOGS = env.SPARSELOCO_LOG_DIR || path.join(ROOT, "logs");
const GPUS = parseInt(env.MINER_GPUS || "1", 10);

function common(role) {
  const up = role.toUpperCase();
  const args = [
    "--wallet.name", env[`${up}_WALLET`] || role,
    "--wallet.hotkey", env[`${up}_HOTKEY`] || "default",
    "--netuid", env.SPARSELOCO_NETUID || "1",
    "--subtensor.network", env.SPARSELOCO_NETWORK || "finney",
    "--state_dir", env.SPARSELOCO_STATE_DIR || path.join(env.HOME || ROOT, ".sparseloco"),
    "--logging.logging_dir", LOGS,
  ];
  const optional = {
    "--wallet.path": env.SPARSELOCO_WALLET_PATH,
    "--subtensor.chain_endpoint": env.SPARSELOCO_CHAIN_ENDPOINT,
    "--storage.credentials_file": env[`${up}_CREDENTIALS`],
    "--device": env[`${up}_DEVICE`],
    "--metrics.port": env[`${up}_METRICS_PORT`],
    "--metrics_file": env[`${up}_METRICS_FILE`],
  };
  for (const [flag, value] of Object.entries(optional)) {
    if (value) args.push(flag, value);
  }
  return args;
}

function app(name, script, args) {
  return {
    name,
    script,
    args,
    cwd: ROOT,
    interpreter: "none",          // script is the venv's python or torchrun itself
    autorestart: true,
    exp_backoff_restart_delay: 2000, // 2 s, doubling up to 15 s while it keeps crashing
    max_restarts: 50,
    min_uptime: "60s",
    // exit 2 is a set-up failure the neuron logged in one line; restarting will not fix it. Not 0: pm2 reports
    // a process killed by a signal (kill -9, the OOM killer) as code 0, and that one must come back.
    stop_exit_codes: [2],
    kill_timeout: 90000,            // SIGTERM ends the window cleanly (state saved); SIGKILL only after 90 s
    out_file: path.join(LOGS, `pm2-${name}.out.log`),   // what the process prints before its own log is up
    error_file: path.join(LOGS, `pm2-${name}.err.log`),
    merge_logs: true,
    time: false,                    // the neurons' lines carry their own dated UTC time
    env: { OMP_NUM_THREADS: env.OMP_NUM_THREADS || "4", PYTHONUNBUFFERED: "1" },
  };
}

// Several GPUs: torchrun starts one process per GPU and the miner trains sharded (template/node/distributed.py).
const miner = GPUS > 1
  ? app("miner", path.join(VENV, "bin", "torchrun"),
        ["--standalone", "--nproc-per-node", String(GPUS), "neurons/miner.py", ...common("miner")])
  : app("miner", path.join(VENV, "bin", "python"), ["neurons/miner.py", ...common("miner")]);
const validator = app("validator", path.join(VENV, "bin", "python"), ["neurons/validator.py", ...common("validator")]);

module.exports = { apps: [miner, validator] };
