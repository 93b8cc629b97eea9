// Creates a blob container on azurite: node create-container.mjs PORT NAME
import { BlobServiceClient } from "@azure/storage-blob";

const [port, name] = process.argv.slice(2);
const conn =
  "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;" +
  "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;" +
  `BlobEndpoint=http://127.0.0.1:${port}/devstoreaccount1;`;
const client = BlobServiceClient.fromConnectionString(conn);
await client.getContainerClient(name).createIfNotExists();
