'use strict';
// Hello world for the Legion Node.js runtime (entrypoint `index.js:handler`).
module.exports.handler = async (req) => {
  let name = req.query.name || 'world';
  if (req.method === 'POST' && req.body.length) name = (req.json() || {}).name || name;
  return {
    status: 200,
    headers: { 'X-Powered-By': 'legion' },
    body: { message: `${process.env.GREETING || 'Hello'}, ${name}!` },
  };
};
