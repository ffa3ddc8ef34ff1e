/**
 * The console's entry point: mounts {@link App} into `#app`.
 * @module
 */
import { render } from "preact";
import { App } from "./app.tsx";
import "./style.css";

const root = document.getElementById("app");
if (root !== null) render(<App />, root);
