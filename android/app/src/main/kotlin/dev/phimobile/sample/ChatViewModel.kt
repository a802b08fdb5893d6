package dev.phimobile.sample

import android.app.ActivityManager
import android.app.Application
import android.net.Uri
import android.provider.OpenableColumns
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import dev.phimobile.DownloadRequest
import dev.phimobile.chat.ChatController
import dev.phimobile.chat.ChatSettings
import dev.phimobile.chat.ChatState
import dev.phimobile.estimateModelMemory
import java.io.File
import java.io.FileNotFoundException
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/** A model the app offers to download. */
data class Downloadable(val title: String, val request: DownloadRequest, val approxBytes: Long)

/**
 * A `.gguf` already in app storage (imported or downloaded earlier), with the memory a chat with
 * it needs at the app's context length (the library's estimate from the file's header; null when
 * the header cannot be read, and loading will say why).
 */
data class LocalModel(val file: File, val neededBytes: Long?) {
    val name: String get() = file.name
}

/**
 * The KV cache (f16) grows with the chat up to this many tokens: for Phi-3-mini 0.4 GB at 1024
 * (1.6 GB at its full 4096), a third of that for Phi-4-mini. See README "Android".
 */
private const val CONTEXT_LENGTH = 1024

/**
 * Owns the [ChatController], so a conversation (and the loaded model) survives rotation; the
 * model is freed in [onCleared], when the screen is gone for good.
 */
class ChatViewModel(application: Application) : AndroidViewModel(application) {
    private val modelsDir = File(application.filesDir, "models")

    private val controller = ChatController(
        scope = viewModelScope,
        settings = ChatSettings(contextLength = CONTEXT_LENGTH),
        // The last chat, back with its KV cache when its model is loaded again, also after the
        // process was killed in the background. Not in the backup (allowBackup is off): it only
        // fits the model file it was saved with.
        chatFile = File(application.filesDir, "chats/last.phichat"),
    )

    val state: StateFlow<ChatState> = controller.state

    private val _localModels = MutableStateFlow<List<LocalModel>>(emptyList())
    val localModels: StateFlow<List<LocalModel>> = _localModels.asStateFlow()

    val catalog = listOf(
        Downloadable(
            title = "Phi-3-mini-4k-instruct, Q4 (2.4 GB)",
            request = DownloadRequest(
                repoId = "microsoft/Phi-3-mini-4k-instruct-gguf",
                filename = "Phi-3-mini-4k-instruct-q4.gguf",
            ),
            approxBytes = 2_390_000_000,
        ),
    )

    init {
        refreshLocalModels()
    }

    fun download(item: Downloadable) = controller.download(item.request, modelsDir)

    fun load(model: LocalModel) = controller.load(model.file.path)

    /** Copies a document picked with the system file picker (SAF) into app storage, then loads it. */
    fun importDocument(uri: Uri) {
        val resolver = getApplication<Application>().contentResolver
        viewModelScope.launch {
            // A ContentResolver query is IPC: off the main thread, like the copy itself.
            val (name, size) = withContext(Dispatchers.IO) {
                resolver.query(uri, arrayOf(OpenableColumns.DISPLAY_NAME, OpenableColumns.SIZE), null, null, null)?.use { c ->
                    if (c.moveToFirst()) {
                        val name = c.getString(c.getColumnIndexOrThrow(OpenableColumns.DISPLAY_NAME))
                        val sizeColumn = c.getColumnIndexOrThrow(OpenableColumns.SIZE)
                        (name ?: "model.gguf") to (if (c.isNull(sizeColumn)) -1L else c.getLong(sizeColumn))
                    } else {
                        null
                    }
                } ?: ("model.gguf" to -1L)
            }
            controller.importFile(name, size, modelsDir) {
                resolver.openInputStream(uri) ?: throw FileNotFoundException("cannot open $uri")
            }
        }
    }

    fun send(message: String): Boolean = controller.send(message)

    fun stop() = controller.stop()

    fun newChat() = controller.newChat()

    /** From `onTrimMemory`: gives back the chat's spare KV-cache memory (off the main thread). */
    fun trimMemory() = controller.trimMemory()

    /** Frees the model and goes back to the model list. */
    fun unload() {
        controller.unload()
        refreshLocalModels()
    }

    fun refreshLocalModels() {
        viewModelScope.launch {
            _localModels.value = withContext(Dispatchers.IO) {
                // Imports sit at the top; downloads in the Hub layout (models--org--name/snapshots/…).
                // Partial files (.partial, .part, .incomplete) are not models yet.
                modelsDir.walkTopDown()
                    .filter { it.isFile && it.name.endsWith(".gguf") }
                    .map { LocalModel(it, estimatedBytes(it)) }
                    .sortedBy { it.name }
                    .toList()
            }
        }
    }

    /** Reads the file's header (a few KB): on Dispatchers.IO, like the directory walk. */
    private fun estimatedBytes(file: File): Long? =
        runCatching { estimateModelMemory(file.path, CONTEXT_LENGTH) }.getOrNull()

    /**
     * A warning when a model that needs [bytes] will likely not fit: the weights are the mapped
     * file, which every token reads (so it needs room to stay resident), plus the KV cache and
     * working buffers, as [estimateModelMemory] counts them. For a download that is not on the
     * device yet only the file's size is known: [atLeast] says the need is a lower bound.
     * Android kills a foreground app that runs the device out of memory without an
     * OutOfMemoryError to catch, so check first.
     */
    fun memoryWarning(bytes: Long, atLeast: Boolean = false): String? {
        val am = getApplication<Application>().getSystemService(ActivityManager::class.java)
        val info = ActivityManager.MemoryInfo().also { am.getMemoryInfo(it) }
        return if (bytes > info.availMem) {
            "Needs ${if (atLeast) "at least" else "about"} ${gb(bytes)} of memory; ${gb(info.availMem)} is available now " +
                "(of ${gb(info.totalMem)}). The app may be closed by the system while loading."
        } else {
            null
        }
    }

    override fun onCleared() {
        // viewModelScope is already cancelled here; close() does not need it.
        controller.close()
    }

    private fun gb(bytes: Long) = "%.1f GB".format(bytes / 1e9)
}
