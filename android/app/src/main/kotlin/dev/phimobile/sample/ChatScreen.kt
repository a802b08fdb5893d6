package dev.phimobile.sample

import androidx.activity.compose.rememberLauncherForActivityResult
import androidx.activity.result.contract.ActivityResultContracts
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.PaddingValues
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.Spacer
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.imePadding
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.size
import androidx.compose.foundation.layout.widthIn
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.items
import androidx.compose.foundation.lazy.rememberLazyListState
import androidx.compose.foundation.shape.RoundedCornerShape
import androidx.compose.material3.Button
import androidx.compose.material3.ExperimentalMaterial3Api
import androidx.compose.material3.HorizontalDivider
import androidx.compose.material3.LinearProgressIndicator
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Scaffold
import androidx.compose.material3.Surface
import androidx.compose.material3.Text
import androidx.compose.material3.TextButton
import androidx.compose.material3.TopAppBar
import androidx.compose.runtime.Composable
import androidx.compose.runtime.LaunchedEffect
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.saveable.rememberSaveable
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.Color
import androidx.compose.ui.unit.dp
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import dev.phimobile.StopReason
import dev.phimobile.chat.ChatState
import dev.phimobile.chat.Turn
import dev.phimobile.chat.TurnStats
import java.io.File

/** The whole app: a model picker until a model is loaded, then the chat. */
@OptIn(ExperimentalMaterial3Api::class)
@Composable
fun ChatScreen(vm: ChatViewModel) {
    val state by vm.state.collectAsStateWithLifecycle()
    val localModels by vm.localModels.collectAsStateWithLifecycle()
    val pickDocument = rememberLauncherForActivityResult(ActivityResultContracts.OpenDocument()) { uri ->
        if (uri != null) vm.importDocument(uri)
    }
    val current = state
    val model = when (current) {
        is ChatState.Ready -> current.model
        is ChatState.Generating -> current.model
        is ChatState.Error -> current.model
        else -> null
    }

    Scaffold(
        modifier = Modifier.imePadding(),
        topBar = {
            TopAppBar(
                title = { Text(model?.let { File(it.path).name } ?: "phi-mobile chat", maxLines = 1) },
                actions = {
                    if (model != null) {
                        TextButton(onClick = { vm.newChat() }, enabled = current !is ChatState.Generating) { Text("New chat") }
                        TextButton(onClick = { vm.unload() }) { Text("Models") }
                    }
                },
            )
        },
    ) { padding ->
        Column(Modifier.padding(padding).fillMaxSize()) {
            when (current) {
                ChatState.NoModel -> ModelPicker(
                    vm = vm,
                    localModels = localModels,
                    onImport = { pickDocument.launch(arrayOf("*/*")) },
                )
                is ChatState.Downloading -> Progress(
                    label = when (current.source) {
                        ChatState.Downloading.Source.DOWNLOAD -> "Downloading"
                        ChatState.Downloading.Source.IMPORT -> "Copying into app storage"
                    } + " — ${mb(current.bytesDone)}" + (if (current.totalBytes > 0) " of ${mb(current.totalBytes)}" else ""),
                    fraction = current.fraction,
                    onStop = vm::stop,
                )
                is ChatState.Loading -> Progress("Loading the model", current.progress, onStop = vm::stop)
                is ChatState.Ready -> Chat(current.transcript, pending = null, generating = false, vm = vm)
                is ChatState.Generating -> Chat(current.transcript, pending = current.prompt to current.partial, generating = true, vm = vm)
                is ChatState.Error -> if (current.recoverable) {
                    ErrorBanner(current.message)
                    Chat(current.transcript, pending = null, generating = false, vm = vm)
                } else {
                    ErrorBanner(current.message)
                    ModelPicker(vm = vm, localModels = localModels, onImport = { pickDocument.launch(arrayOf("*/*")) })
                }
            }
        }
    }
}

@Composable
private fun ModelPicker(vm: ChatViewModel, localModels: List<LocalModel>, onImport: () -> Unit) {
    LaunchedEffect(Unit) { vm.refreshLocalModels() }
    LazyColumn(contentPadding = PaddingValues(16.dp), verticalArrangement = Arrangement.spacedBy(12.dp)) {
        if (localModels.isNotEmpty()) {
            item { Text("On this device", style = MaterialTheme.typography.titleMedium) }
            items(localModels, key = { it.file.path }) { local ->
                ModelRow(local.name, mb(local.file.length()), local.neededBytes?.let { vm.memoryWarning(it) }, "Load") { vm.load(local) }
            }
            item { HorizontalDivider() }
        }
        item { Text("Download", style = MaterialTheme.typography.titleMedium) }
        items(vm.catalog, key = { it.request.repoId + "/" + it.request.filename }) { item ->
            ModelRow(item.title, item.request.repoId, vm.memoryWarning(item.approxBytes, atLeast = true), "Download") { vm.download(item) }
        }
        item { HorizontalDivider() }
        item {
            Column(verticalArrangement = Arrangement.spacedBy(8.dp)) {
                Text("Or import a .gguf file (it is copied into app storage).", style = MaterialTheme.typography.bodyMedium)
                OutlinedButton(onClick = onImport) { Text("Import from device") }
            }
        }
    }
}

@Composable
private fun ModelRow(title: String, detail: String, warning: String?, action: String, onClick: () -> Unit) {
    Row(verticalAlignment = Alignment.CenterVertically) {
        Column(Modifier.weight(1f)) {
            Text(title, style = MaterialTheme.typography.bodyLarge)
            Text(detail, style = MaterialTheme.typography.bodySmall)
            if (warning != null) Text(warning, style = MaterialTheme.typography.bodySmall, color = MaterialTheme.colorScheme.error)
        }
        Button(onClick = onClick) { Text(action) }
    }
}

@Composable
private fun Progress(label: String, fraction: Float?, onStop: () -> Unit) {
    Column(Modifier.fillMaxWidth().padding(24.dp), verticalArrangement = Arrangement.spacedBy(12.dp)) {
        Text(label)
        if (fraction == null) {
            LinearProgressIndicator(Modifier.fillMaxWidth())
        } else {
            LinearProgressIndicator(progress = { fraction }, modifier = Modifier.fillMaxWidth())
        }
        OutlinedButton(onClick = onStop) { Text("Stop") }
    }
}

@Composable
private fun ErrorBanner(message: String) {
    Surface(color = MaterialTheme.colorScheme.errorContainer, modifier = Modifier.fillMaxWidth()) {
        Text(message, Modifier.padding(12.dp), color = MaterialTheme.colorScheme.onErrorContainer)
    }
}

/** The transcript, the answer streaming in (if any), and the input row. */
@Composable
private fun androidx.compose.foundation.layout.ColumnScope.Chat(
    transcript: List<Turn>,
    pending: Pair<String, String>?,
    generating: Boolean,
    vm: ChatViewModel,
) {
    val listState = rememberLazyListState()
    val rows = transcript.size + (if (pending != null) 1 else 0)
    // Follow the answer as it grows.
    LaunchedEffect(rows, pending?.second?.length) {
        if (rows > 0) listState.scrollToItem(rows - 1, scrollOffset = Int.MAX_VALUE / 2)
    }
    LazyColumn(
        state = listState,
        modifier = Modifier.weight(1f).fillMaxWidth(),
        contentPadding = PaddingValues(12.dp),
        verticalArrangement = Arrangement.spacedBy(12.dp),
    ) {
        items(transcript) { turn -> Exchange(turn.user, turn.assistant, turn.stats) }
        if (pending != null) item { Exchange(pending.first, pending.second.ifEmpty { "…" }, stats = null) }
    }
    var input by rememberSaveable { mutableStateOf("") }
    Row(Modifier.fillMaxWidth().padding(8.dp), verticalAlignment = Alignment.CenterVertically) {
        OutlinedTextField(
            value = input,
            onValueChange = { input = it },
            modifier = Modifier.weight(1f),
            placeholder = { Text("Message") },
            maxLines = 4,
        )
        Spacer(Modifier.size(8.dp))
        if (generating) {
            Button(onClick = vm::stop) { Text("Stop") }
        } else {
            Button(onClick = { if (vm.send(input)) input = "" }, enabled = input.isNotBlank()) { Text("Send") }
        }
    }
}

@Composable
private fun Exchange(user: String, assistant: String, stats: TurnStats?) {
    Column(Modifier.fillMaxWidth(), verticalArrangement = Arrangement.spacedBy(6.dp)) {
        Bubble(user, MaterialTheme.colorScheme.primaryContainer, Modifier.align(Alignment.End))
        Bubble(assistant, MaterialTheme.colorScheme.surfaceVariant, Modifier.align(Alignment.Start))
        if (stats != null) Text(describe(stats), style = MaterialTheme.typography.labelSmall)
    }
}

@Composable
private fun Bubble(text: String, color: Color, modifier: Modifier) {
    Surface(color = color, shape = RoundedCornerShape(12.dp), modifier = modifier.widthIn(max = 320.dp)) {
        Text(text, Modifier.padding(10.dp))
    }
}

private fun describe(s: TurnStats): String = buildString {
    append("%.1f tokens/s · first token %.0f ms · %d tokens".format(s.tokensPerSecond, s.timeToFirstTokenMs, s.generatedTokens))
    when (s.stopReason) {
        StopReason.CANCELLED -> append(" · stopped")
        StopReason.MAX_TOKENS -> append(" · length limit")
        StopReason.CONTEXT_FULL -> append(" · context full")
        else -> {}
    }
}

private fun mb(bytes: Long) = "%.0f MB".format(bytes / 1e6)
